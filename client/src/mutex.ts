/** A FIFO async lock: serializes signaling operations on one peer connection. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Resolves, in call order, with a `release` function once every earlier holder released. */
  acquire(): Promise<() => void> {
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const acquired = this.tail.then(() => {
      let done = false;
      return () => {
        if (done) return;
        done = true;
        release();
      };
    });
    this.tail = this.tail.then(() => released);
    return acquired;
  }
}
