import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { EventEmitter, once } from 'node:events';
import {
  decodeDatagram, encodeDatagram, NONCE_LENGTH, signerFromPrivateKey,
  type ControlMessage, type Datagram, type Signer,
} from '../../packages/shared/src/index.js';

/** A fresh key pair, as a flood of new identities would use: one per datagram costs nothing. */
export function freshSigner(): Signer {
  return signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
}

export function signed(message: ControlMessage, signer: Signer): Buffer {
  return encodeDatagram(message, signer, { timestamp: Date.now(), nonce: randomBytes(NONCE_LENGTH) });
}

export { nonceOf } from '../security/tools.js';

export interface Received {
  datagram: Datagram;
  bytes: number;
  from: RemoteInfo;
}

/**
 * A UDP socket on one loopback address (127.0.0.0/8 is all on lo, so each test can be its own
 * source address with its own rate-limit buckets) that keeps every decodable answer and its size.
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

  static async open(address: string): Promise<Udp> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, address, resolve));
    socket.setMulticastInterface('127.0.0.1');
    return new Udp(socket);
  }

  send(buf: Buffer, address: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => this.socket.send(buf, port, address, (err) => (err ? reject(err) : resolve())));
  }

  /** Resolves once `count` answers match, with those answers; rejects after the timeout. */
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

  answersTo(request: Buffer): Received[] {
    return this.received.filter(({ datagram: { message } }) => 'request' in message && message.request.equals(request));
  }

  close(): void {
    this.socket.close();
  }
}
