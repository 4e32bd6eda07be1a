import { createServer, type Server, type TLSSocket } from 'node:tls';
import {
  ALPN_PIECES, ErrorCode, peerIdOf, RateLimitedLog, shortId, TLS_CIPHERS, type Identity, type Logger, type PeerId,
} from '@groupcast/shared';
import { MemberSession } from './member-session.js';
import type { Membership } from '../control/membership.js';

const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * The TLS listener. A connection is admitted only if the client's certificate key hashes to an id
 * authorized in at least one group; one session per member, a newer connection replacing an older.
 */
export class DataPlane {
  private server: Server | undefined;
  private readonly sessions = new Map<PeerId, MemberSession>();
  /** Connections refused and admitted; sessions closed for breaking the protocol or for stalling (member-session.ts). */
  readonly counters = { refused: 0, admitted: 0, violations: 0, stalled: 0 };
  /**
   * A revoked member redials every 30 s for as long as it runs, and anyone can dial in a loop: one line
   * per id a minute (with how many were suppressed) says who is knocking without filling the disk; the
   * counter has every refusal.
   */
  private readonly refusals: RateLimitedLog;

  constructor(
    private readonly options: {
      log: Logger;
      identity: Identity;
      membership: Membership;
      host: string;
      port: number;
      serverName: string;
      /** `--heartbeat-timeout`, for every member session. */
      heartbeatTimeoutMs: number;
      onSession: (session: MemberSession) => void;
      /** Whether a transfer may still be offered to a member; a member's partials of any other are reclaimed. */
      isLive: (transfer: string, member: PeerId) => boolean;
    },
  ) {
    this.refusals = new RateLimitedLog(options.log);
  }

  async start(): Promise<void> {
    const { identity } = this.options;
    const server = createServer({
      cert: identity.certPem,
      key: identity.keyPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      ciphers: TLS_CIPHERS,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      // A member offering it speaks pieces; one offering no ALPN is served plain version 1.
      ALPNProtocols: [ALPN_PIECES],
    });
    server.on('secureConnection', (socket) => this.admit(socket));
    server.on('tlsClientError', (err, socket) => {
      this.counters.refused++;
      this.options.log.debug({ err, address: socket.remoteAddress }, 'tls handshake failed');
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.options.log.error({ err }, 'data plane listener error'));
  }

  get port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  /** The member's session, once it has said HELLO: nothing is offered over a connection before that. */
  session(id: PeerId): MemberSession | undefined {
    const session = this.sessions.get(id);
    return session?.ready ? session : undefined;
  }

  private admit(socket: TLSSocket): void {
    const { log, membership } = this.options;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    const id = peerIdOf(socket);
    if (!id || !membership.isAdmissible(id)) {
      this.counters.refused++;
      const fields = { member: id, address: socket.remoteAddress, refused: this.counters.refused };
      this.refusals.warn(`refused:${id ?? 'no certificate'}`, fields, 'refused connection from unauthorized id');
      socket.destroy();
      return;
    }
    this.counters.admitted++;
    const isLive = (transfer: string): boolean => this.options.isLive(transfer, id);
    const session = new MemberSession(
      id, socket, log.child({ member: shortId(id) }), this.options.serverName, isLive, this.options.heartbeatTimeoutMs,
    );
    this.sessions.get(id)?.close(new Error('replaced by a newer connection'));
    this.sessions.set(id, session);
    session.once('ready', () => this.options.onSession(session));
    session.once('closed', () => {
      if (this.sessions.get(id) === session) this.sessions.delete(id);
      if (session.fault?.code === ErrorCode.STALLED) this.counters.stalled++;
      else if (session.fault) this.counters.violations++;
    });
    session.start();
  }

  async close(): Promise<void> {
    for (const session of this.sessions.values()) session.close();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
