import { readFile, writeFile } from 'node:fs/promises';
import { connect as connectTcp, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import {
  encodeFrame, FrameReader, PROTOCOL_VERSION, TLS_CIPHERS,
  type Frame, type Identity,
} from '../../packages/shared/src/index.js';
import type { DeliveryView } from '../../packages/server/src/operator/operations.js';
import { callDaemon } from '../../packages/server/src/operator/control-socket.js';
import { CLIENT_BIN, SERVER_BIN, testPort, type Daemon, type harness } from '../support/daemons.js';

/**
 * What the session hardening tests use: a real group-server started with a config the test writes,
 * and a hostile member built from the shared codecs (an identity the test holds, a JOIN it signs with
 * security/tools.ts's joinAs, a raw TLS connection over which it says exactly the frames the test
 * wants, and reads or stops reading).
 *
 * Use this when the members are the test itself: the config lists bare ids (and open groups), the
 * server's TCP port comes back for HostileLink to dial, and the server is a value a test can restart
 * as it was (environment included). When the members are real group-client daemons to start, kill and
 * look at on disk, use test/durability/cluster.ts (Cluster) instead.
 */
type Harness = ReturnType<typeof harness>;

export const MiB = 1024 * 1024;

export interface Server {
  daemon: Daemon;
  state: string;
  id: string;
  udpPort: number;
  tcpPort: number;
  /** What the daemon was started with, so that a test can start it again on the same state and ports. */
  args: string[];
  env: Record<string, string>;
}

/** Starts a group-server on loopback whose groups allow the given ids (on any free TCP port unless named). */
export async function startServer(
  h: Harness, groups: Array<{ name: string; members: string[]; open?: boolean }>, args: string[] = [], env: Record<string, string> = {},
  tcpPort = 0,
): Promise<Server> {
  const state = await h.dir('server');
  const config = join(state, 'config.json');
  await writeFile(config, JSON.stringify({ groups }));
  const udpPort = testPort();
  const full = [
    '--config', config, '--state-dir', state, '--tcp-port', String(tcpPort), '--interface', '127.0.0.1', '--port', String(udpPort), ...args,
  ];
  const daemon = h.spawn('server', SERVER_BIN, full, env);
  const started = await daemon.waitForMsg('group-server started');
  return { daemon, state, id: String(started.id), udpPort, tcpPort: Number(started.tcpPort), args: full, env };
}

/** Stops the server (SIGTERM) and starts it again as it was; resolves once it is up. */
export async function restartServer(h: Harness, server: Server): Promise<Server> {
  await server.daemon.stop('SIGTERM');
  const daemon = h.spawn('server', SERVER_BIN, server.args, server.env);
  await daemon.waitForMsg('group-server started', {}, 30_000);
  return { ...server, daemon };
}

/** A real group-client that joins these groups of the server. */
export function startMember(h: Harness, server: Server, name: string, state: string, downloads: string, groups: string[]): Daemon {
  return h.spawn(name, CLIENT_BIN, [
    ...groups.flatMap((group) => ['--join', group]), '--server-id', server.id, '--state-dir', state, '--downloads', downloads,
    '--name', name, '--interface', '127.0.0.1', '--port', String(server.udpPort),
  ]);
}

export async function deliveries(server: Server): Promise<DeliveryView[]> {
  const status = await callDaemon<{ transfers: Array<{ deliveries: DeliveryView[] }> }>(server.state, 'status', {});
  return status.transfers.flatMap((transfer) => transfer.deliveries);
}

export async function connectionCounters(server: Server): Promise<Record<string, number>> {
  const status = await callDaemon<{ server: { connections: Record<string, number> } }>(server.state, 'status', {});
  return status.server.connections;
}

/** The resident set size of a process, in bytes (VmRSS in /proc/<pid>/status). */
export async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (!kb) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) * 1024;
}

/**
 * A member's data connection driven by hand. It keeps every frame the server sends, and can stop
 * reading at any point (the socket is paused, so the server's output backs up into its own buffers).
 */
export class HostileLink {
  readonly frames: Frame[] = [];
  closed = false;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: TLSSocket, private readonly tcp: Socket, onFrame: (frame: Frame, link: HostileLink) => void) {
    const reader = new FrameReader((frame) => {
      this.frames.push(frame);
      onFrame(frame, this);
      this.wake();
    });
    reader.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => reader.write(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects with the identity's certificate; `onFrame` sees each frame as it is read; `alpn`: offer it (gcdp/1.1). */
  static open(
    port: number, identity: Identity, onFrame: (frame: Frame, link: HostileLink) => void = () => undefined, alpn?: string,
  ): Promise<HostileLink> {
    return new Promise((resolve, reject) => {
      // TLS over a TCP socket of our own, so that reset() can end the connection as a crash does.
      const tcp = connectTcp({ host: '127.0.0.1', port });
      const socket = connect({
        socket: tcp, cert: identity.certPem, key: identity.keyPem, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS,
        rejectUnauthorized: false, checkServerIdentity: () => undefined, ...(alpn ? { ALPNProtocols: [alpn] } : {}),
      });
      socket.once('secureConnect', () => resolve(new HostileLink(socket, tcp, onFrame)));
      socket.once('error', reject);
    });
  }

  send(frame: Frame): void {
    if (!this.closed) this.socket.write(encodeFrame(frame));
  }

  hello(name = 'hostile'): void {
    this.send({ type: 'hello', version: PROTOCOL_VERSION, name });
  }

  stopReading(): void {
    this.socket.pause();
  }

  private wake(): void {
    for (const waiter of this.waiters) waiter();
  }

  /** Resolves when `check` holds, re-checked on every frame and on the close; bounded in time. */
  until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const test = (): void => {
        if (!check()) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(test);
      };
      this.waiters.add(test);
      test();
    });
  }

  /** The first frame of this type (already read or to come). */
  async frame<T extends Frame['type']>(type: T, timeoutMs?: number): Promise<Extract<Frame, { type: T }>> {
    const find = (): Frame | undefined => this.frames.find((frame) => frame.type === type);
    await this.until(() => find() !== undefined, `a ${type} frame`, timeoutMs);
    return find() as Extract<Frame, { type: T }>;
  }

  /** Resolves when the server has closed the connection. */
  whenClosed(timeoutMs?: number): Promise<void> {
    return this.until(() => this.closed, 'the server to close the connection', timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Drops the connection with a TCP reset, as a member that crashed or lost power: no FIN, no TLS close. */
  reset(): void {
    this.tcp.resetAndDestroy();
  }
}
