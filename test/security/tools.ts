import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { EventEmitter, once } from 'node:events';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { setTimeout as delay } from 'node:timers/promises';
import {
  ALPN_PIECES, decodeDatagram, DEFAULT_GROUP_ADDRESS, encodeDatagram, encodeFrame, loadOrCreateIdentity, NONCE_LENGTH, PROTOCOL_VERSION, signerFromPrivateKey,
  TLS_CIPHERS, type Capabilities, type ControlMessage, type Datagram, type Identity, type Signer,
} from '../../packages/shared/src/index.js';
import { callDaemon } from '../../packages/server/src/operator/control-socket.js';

/**
 * What the attack tests use besides real daemons: identities the test holds the keys of, a UDP
 * socket to send hand-made datagrams and read the answers, a raw TLS client, and file-tree snapshots.
 */

export function identityIn(dir: string, name = 'attacker'): Promise<Identity> {
  return loadOrCreateIdentity(dir, name);
}

/** The victim's public key, the attacker's signature: what a forger can put together. */
export function forgedSigner(victim: Signer, attacker: Signer): Signer {
  return { id: victim.id, publicKey: victim.publicKey, sign: (data) => attacker.sign(data) };
}

/** A fresh key pair, as a flood of new identities would use: one per datagram costs nothing. */
export function freshSigner(): Signer {
  return signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
}

export function craft(message: ControlMessage, signer: Signer, envelope: { timestamp?: number; nonce?: Buffer } = {}): Buffer {
  return encodeDatagram(message, signer, {
    timestamp: envelope.timestamp ?? Date.now(),
    nonce: envelope.nonce ?? randomBytes(NONCE_LENGTH),
  });
}

export interface Received {
  datagram: Datagram;
  bytes: number;
  from: RemoteInfo;
}

/**
 * A UDP socket on one loopback address that sends crafted bytes, as any host on the LAN could, and
 * keeps every decodable answer with its size and sender. 127.0.0.0/8 is all on lo, so a test can be
 * its own source address with its own rate-limit buckets. Requests to the server go to the control
 * plane's multicast group (DEFAULT_GROUP_ADDRESS), not unicast to the port: members on this host
 * share the port, and the kernel would hand a unicast datagram to one of them.
 */
export class Udp {
  readonly received: Received[] = [];
  private readonly arrivals = new EventEmitter();

  private constructor(private readonly socket: Socket) {
    socket.on('message', (buf, from) => {
      try {
        this.received.push({ datagram: decodeDatagram(buf), bytes: buf.length, from });
      } catch {
        return;
      }
      this.arrivals.emit('arrival');
    });
  }

  static async open(address = '127.0.0.1'): Promise<Udp> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, address, resolve));
    socket.setMulticastInterface('127.0.0.1');
    return new Udp(socket);
  }

  send(buf: Buffer, address: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => this.socket.send(buf, port, address, (err) => (err ? reject(err) : resolve())));
  }

  /** Resolves once `count` answers (seen or to come) match, with those answers; rejects after the timeout. */
  async wait(match: (r: Received) => boolean, count = 1, timeoutMs = 15_000): Promise<Received[]> {
    const signal = AbortSignal.timeout(timeoutMs);
    for (;;) {
      const found = this.received.filter(match);
      if (found.length >= count) return found;
      try {
        await once(this.arrivals, 'arrival', { signal });
      } catch {
        throw new Error(`${found.length} of ${count} matching answers within ${timeoutMs} ms`);
      }
    }
  }

  /** The first answer (seen or to come) to the request with this nonce. */
  async answerTo(request: Buffer, timeoutMs?: number): Promise<Received> {
    const [answer] = await this.wait((r) => answers(r, request), 1, timeoutMs);
    return answer!;
  }

  /** The answers to the request with this nonce received so far. */
  answersSoFar(request: Buffer): Received[] {
    return this.received.filter((r) => answers(r, request));
  }

  close(): void {
    this.socket.close();
  }
}

function answers({ datagram: { message } }: Received, request: Buffer): boolean {
  return 'request' in message && message.request.equals(request);
}

/** The request nonce a crafted datagram carries (bytes 12–27 of the envelope). */
export function nonceOf(datagram: Buffer): Buffer {
  return datagram.subarray(12, 12 + NONCE_LENGTH);
}

/** Joins `group` as `signer` with a hand-made JOIN (a member the test plays itself), and checks it is acknowledged. */
export async function joinAs(signer: Signer, group: string, port: number): Promise<void> {
  const udp = await Udp.open();
  try {
    const join = craft({ type: 'join', group, proof: Buffer.alloc(0) }, signer);
    await udp.send(join, DEFAULT_GROUP_ADDRESS, port);
    const { message } = (await udp.answerTo(nonceOf(join))).datagram;
    if (message.type !== 'ack') throw new Error(`JOIN ${group} was answered ${message.type}`);
  } finally {
    udp.close();
  }
}

/**
 * A hand-made member's data connection on loopback: TLS with its identity and the pieces ALPN, and its
 * HELLO with `caps` once the handshake is done. The caller reads the server's frames from the socket.
 */
export function connectAsMember(identity: Pick<Identity, 'certPem' | 'keyPem'>, port: number, name: string, caps: Capabilities): TLSSocket {
  const socket = connect({
    host: '127.0.0.1', port, cert: identity.certPem, key: identity.keyPem, ALPNProtocols: [ALPN_PIECES],
    minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS, rejectUnauthorized: false, checkServerIdentity: () => undefined,
  });
  socket.on('error', () => undefined);
  socket.on('secureConnect', () => {
    socket.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name, caps }));
  });
  return socket;
}

export interface ServerStatus {
  server: { id: string; datagrams: { dropped: Record<string, number> }; connections: { admitted: number; refused: number } };
  members: Array<{ id: string; joined: string[]; allowedIn: string[] }>;
  transfers: Array<{ id: string; name: string; deliveries: Array<{ member: string; state: string; reason: string }> }>;
}

export function serverStatus(stateDir: string): Promise<ServerStatus> {
  return callDaemon<ServerStatus>(stateDir, 'status', {});
}

/**
 * Asks until `probe` returns a value, for state that shows only in `status` (a drop counter). Bounded
 * in time; each probe is a real round trip to the daemon, so this waits on the daemon, not on a clock.
 */
export async function until<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await delay(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** How far a raw TLS client got: whether the handshake finished, how many application bytes came back. */
export interface TlsAttempt {
  handshake: boolean;
  bytes: number;
  error: string | undefined;
}

/** Connects with the given certificate (or none), says HELLO if the handshake completes, and waits for the close. */
export function tlsAttempt(port: number, identity: Pick<Identity, 'certPem' | 'keyPem'> | undefined, timeoutMs = 15_000): Promise<TlsAttempt> {
  return new Promise((resolve, reject) => {
    const result: TlsAttempt = { handshake: false, bytes: 0, error: undefined };
    const socket = connect({
      host: '127.0.0.1',
      port,
      ...(identity ? { cert: identity.certPem, key: identity.keyPem } : {}),
      minVersion: 'TLSv1.3',
      ciphers: TLS_CIPHERS,
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server kept the connection open'));
    }, timeoutMs);
    socket.on('secureConnect', () => {
      result.handshake = true;
      socket.write(encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'probe' }));
    });
    socket.on('data', (chunk: Buffer) => {
      result.bytes += chunk.length;
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      result.error = err.code ?? err.message;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(result);
    });
  });
}

/** Every entry under `root` with its type, size and (for files) content, keyed by path relative to root. */
export async function snapshot(root: string, skip: (relative: string) => boolean = () => false): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, relative: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const rel = relative ? `${relative}/${entry.name}` : entry.name;
      if (skip(rel)) continue;
      const path = join(dir, entry.name);
      const stats = await lstat(path);
      if (entry.isDirectory()) {
        out.set(rel, `dir ${stats.mode.toString(8)}`);
        await walk(path, rel);
      } else if (entry.isFile()) {
        out.set(rel, `file ${stats.size} ${(await readFile(path)).toString('base64')}`);
      } else {
        out.set(rel, `other ${stats.mode.toString(8)}`);
      }
    }
  };
  await walk(root, '');
  return out;
}

/** Regular files under a directory, recursively, as paths relative to it. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1)).sort();
}
