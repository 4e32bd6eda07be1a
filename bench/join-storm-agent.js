#!/usr/bin/env node
// Many simulated members in one process, for the join-storm benchmark: each has its own Ed25519
// identity and makes a real signed JOIN (the shared codecs), retried with group-client's backoff
// until the server ACKs it. They share one UDP socket; replies are matched by the JOIN's nonce.
//
//   node bench/join-storm-agent.js --count 250 --group Bench --server-id ID --interface 10.77.1.2 \
//        [--group-address 239.255.77.77] [--port 47700] [--deadline-ms 30000]
//
// Prints {"event":"ready"} once its identities exist, sends on a "go" line on stdin, then prints one
// JSON line of results and exits.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import {
  backoffDelay, decodeDatagram, DEFAULT_GROUP_ADDRESS, DEFAULT_UDP_PORT, encodeDatagram, NakReason, NONCE_LENGTH,
  signerFromPrivateKey,
} from '@groupcast/shared';

/** group-client's JOIN retry schedule (packages/client/src/membership.ts). */
const JOIN_BASE_MS = 250;
const JOIN_CAP_MS = 10_000;

const { values: args } = parseArgs({
  options: {
    count: { type: 'string' },
    group: { type: 'string' },
    'server-id': { type: 'string' },
    interface: { type: 'string' },
    'group-address': { type: 'string', default: DEFAULT_GROUP_ADDRESS },
    port: { type: 'string', default: String(DEFAULT_UDP_PORT) },
    'deadline-ms': { type: 'string', default: '30000' },
  },
});
const count = Number(args.count);
if (!Number.isInteger(count) || count < 1 || count > 10_000 || !args.group || !args['server-id'] || !args.interface) {
  process.stderr.write('usage: join-storm-agent.js --count N --group G --server-id ID --interface ADDR\n');
  process.exit(2);
}
const port = Number(args.port);

const members = Array.from({ length: count }, () => ({
  signer: signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey),
  attempts: 0,
  ackedMs: undefined,
  refused: undefined,
  timer: undefined,
}));
const byNonce = new Map();
const socket = dgram.createSocket({ type: 'udp4' });
let started = 0;
let sends = 0;
let settled = 0;

function join(member) {
  if (member.ackedMs !== undefined || member.refused !== undefined) return;
  const nonce = randomBytes(NONCE_LENGTH);
  byNonce.set(nonce.toString('hex'), member);
  const datagram = encodeDatagram({ type: 'join', group: args.group, proof: Buffer.alloc(0) }, member.signer, { timestamp: Date.now(), nonce });
  socket.send(datagram, port, args['group-address']);
  sends++;
  member.timer = setTimeout(() => join(member), backoffDelay(member.attempts++, JOIN_BASE_MS, JOIN_CAP_MS));
}

function settle(member) {
  clearTimeout(member.timer);
  settled++;
  if (settled === count) finish();
}

socket.on('message', (buf) => {
  let datagram;
  try {
    datagram = decodeDatagram(buf);
  } catch {
    return;
  }
  const { message, sender } = datagram;
  if (sender !== args['server-id'] || (message.type !== 'ack' && message.type !== 'nak')) return;
  const member = byNonce.get(message.request.toString('hex'));
  if (!member || member.ackedMs !== undefined || member.refused !== undefined) return;
  if (message.type === 'ack') {
    member.ackedMs = performance.now() - started;
    settle(member);
  } else if (message.reason !== NakReason.RATE_LIMITED) {
    member.refused = message.message;
    settle(member);
  }
});

function finish() {
  const acked = members.filter((m) => m.ackedMs !== undefined).map((m) => m.ackedMs).sort((a, b) => a - b);
  process.stdout.write(`${JSON.stringify({
    count,
    acked: acked.length,
    refused: members.filter((m) => m.refused !== undefined).length,
    lost: members.filter((m) => m.ackedMs === undefined && m.refused === undefined).length,
    retried: members.filter((m) => m.attempts > 1).length,
    sends,
    lastAckMs: acked.length ? acked[acked.length - 1] : null,
    medianAckMs: acked.length ? acked[Math.floor(acked.length / 2)] : null,
  })}\n`);
  process.exit(0);
}

socket.bind(0, () => {
  socket.setMulticastInterface(args.interface);
  socket.setMulticastTTL(1);
  process.stdout.write(`${JSON.stringify({ event: 'ready' })}\n`);
  readline.createInterface({ input: process.stdin }).once('line', () => {
    started = performance.now();
    setTimeout(finish, Number(args['deadline-ms'])).unref();
    for (const member of members) join(member);
  });
});
