import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  errnoCode, ErrorCode, GroupcastError, parsePeerId, writeFileAtomic, type Logger, type PeerId,
} from '@groupcast/shared';

/**
 * How a datagram's sender relates to the pin. 'candidate': nothing is pinned yet, and the sender's id
 * starts as the join code says; it is pinned only once it proves it issued the code (confirm()).
 */
export type PinVerdict = 'pinned' | 'other' | 'unpinned' | 'candidate';

interface PinFile {
  serverId: string;
  name?: string;
  pinnedAt: string;
  how: 'flag' | 'first-seen' | 'join-code';
}

export interface ServerPinOptions {
  log: Logger;
  stateDir: string;
  trustFirstServer: boolean;
  /** With a join code: the start of the id of the server that issued it. */
  codePrefix?: string | undefined;
}

/**
 * The one server id this member trusts, kept in `<stateDir>/server.json`. Everything the member
 * accepts from the network — announcements, replies, the TLS peer — is checked against it, so a
 * rogue server on the LAN can neither redirect the member nor push it files.
 */
export class ServerPin {
  private id: PeerId | undefined;
  private persisting: Promise<void> = Promise.resolve();
  readonly path: string;

  constructor(private readonly options: ServerPinOptions) {
    this.path = join(options.stateDir, 'server.json');
  }

  get pinned(): PeerId | undefined {
    return this.id;
  }

  /** Reads the stored pin; `override` (from --server-id) replaces it and is stored. A corrupt pin is fatal, not ignored. */
  async load(override?: PeerId): Promise<void> {
    const stored = await this.read();
    if (override) {
      if (stored && stored !== override) {
        this.options.log.warn({ stored, pinned: override }, 'replacing the stored server pin with --server-id');
      }
      this.id = override;
      if (stored !== override) await this.write(override, 'flag');
      return;
    }
    const { codePrefix } = this.options;
    if (stored && codePrefix && !stored.startsWith(codePrefix)) {
      throw new GroupcastError(
        ErrorCode.USAGE,
        `the join code is for a server whose id starts ${codePrefix}, but ${stored} is pinned (${this.path}); remove that file to follow the code`,
      );
    }
    this.id = stored;
    if (stored) this.options.log.info({ server: stored }, 'server pinned');
  }

  private async read(): Promise<PeerId | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read ${this.path}`, { cause: err });
    }
    try {
      return parsePeerId((JSON.parse(text) as PinFile).serverId);
    } catch (err) {
      throw new GroupcastError(ErrorCode.STATE_DIR, `${this.path} is corrupt; remove it and pin again`, { cause: err });
    }
  }

  private async write(id: PeerId, how: PinFile['how'], name?: string): Promise<void> {
    const record: PinFile = { serverId: id, pinnedAt: new Date().toISOString(), how, ...(name ? { name } : {}) };
    try {
      await writeFileAtomic(this.path, `${JSON.stringify(record, null, 2)}\n`);
    } catch (err) {
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot write ${this.path}`, { cause: err });
    }
  }

  /**
   * Judges a sender. With --trust-first-server and nothing pinned, the first server seen becomes the
   * pin on the spot (in memory at once, on disk shortly after) and is logged loudly.
   */
  consider(sender: PeerId, name?: string): PinVerdict {
    if (this.id) return sender === this.id ? 'pinned' : 'other';
    if (this.options.codePrefix) return sender.startsWith(this.options.codePrefix) ? 'candidate' : 'other';
    if (!this.options.trustFirstServer) return 'unpinned';
    this.adopt(sender, 'first-seen', name);
    this.options.log.warn(
      { server: sender, serverName: name, path: this.path },
      'TRUSTING FIRST SERVER SEEN: pinned it; check this id with the server operator',
    );
    return 'pinned';
  }

  /** A candidate proved it issued the join code: it becomes the pin (logged once stored). */
  confirm(sender: PeerId): void {
    if (this.id) return;
    this.adopt(sender, 'join-code', undefined, () => {
      this.options.log.info({ server: sender, path: this.path }, 'pinned the server that issued the join code');
    });
  }

  /** Pins in memory at once and on disk shortly after. */
  private adopt(sender: PeerId, how: PinFile['how'], name?: string, stored?: () => void): void {
    this.id = sender;
    this.persisting = this.write(sender, how, name).then(stored, (err: unknown) => {
      this.options.log.error({ err, path: this.path }, 'could not store the server pin; it holds until restart');
    });
  }

  /** Waits for a pending write of the pin, so shutdown does not cut it short. */
  async close(): Promise<void> {
    await this.persisting;
  }
}
