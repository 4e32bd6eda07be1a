import type { TLSSocket } from 'node:tls';
import { peerIdFromSpki, type PeerId } from '../identity.js';

/**
 * TLS 1.3 only; AES-128-GCM first because it is the cheapest AEAD with AES-NI, which is what a bulk
 * transfer spends its CPU on. Certificates are self-signed: trust comes from the peer id (the hash of
 * the key), checked by the caller, not from a CA.
 */
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

export function peerIdOf(socket: TLSSocket): PeerId | undefined {
  const cert = socket.getPeerX509Certificate();
  return cert ? peerIdFromSpki(cert.publicKey.export({ type: 'spki', format: 'der' })) : undefined;
}
