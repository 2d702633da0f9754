/** A FIFO async lock: serializes signaling operations on one peer connection. */
export declare class Mutex {
    private tail;
    /** Resolves, in call order, with a `release` function once every earlier holder released. */
    acquire(): Promise<() => void>;
}
