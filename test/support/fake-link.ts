import type { Frame } from '../../packages/shared/src/index.js';

/** A member's data connection without a socket: the frames the member sends, taken in order as it sends them. */
export class FakeLink {
  readonly sent: Frame[] = [];
  private waiter: (() => void) | undefined;

  constructor(private readonly waitMs = 5_000) {}

  send(frame: Frame): void {
    this.sent.push(frame);
    this.waiter?.();
  }

  /** The next frame the member sends (they are answered in order). */
  async next(): Promise<Frame> {
    const deadline = Date.now() + this.waitMs;
    while (this.sent.length === 0) {
      if (Date.now() > deadline) throw new Error('member sent nothing');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
    return this.sent.shift() as Frame;
  }
}
