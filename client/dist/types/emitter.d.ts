/** A small typed event emitter (no dependency on node's `events`). */
/** Maps event names to listener signatures. */
export type EventMap = {
    [event: string]: (...args: any[]) => void;
};
/** Typed `on` / `off` / `emit`. Listeners run synchronously, in registration order. */
export declare class TypedEmitter<E extends EventMap> {
    private readonly listeners;
    /** Adds a listener. Adding the same function twice has no effect. */
    on<K extends keyof E>(event: K, listener: E[K]): this;
    /** Removes a listener added with `on`. Unknown listeners are ignored. */
    off<K extends keyof E>(event: K, listener: E[K]): this;
    /** Removes every listener (of one event, or of all events). */
    removeAllListeners(event?: keyof E): this;
    /**
     * Calls the listeners of `event`. A throwing listener does not stop the others nor the
     * caller; its error is reported asynchronously, like a DOM event listener's.
     */
    protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void;
}
