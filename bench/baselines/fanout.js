#!/usr/bin/env node
// Fan-out baselines groupcast is measured against: one sender streams the same file to N receivers,
// each over its own connection.
//
//   raw  plain node:net, no framing, no hash: the ceiling the machine allows.
//   tls  node:tls, TLS 1.3 with certificates on both sides, receivers sha256 the bytes as they write:
//        the floor any secure push (groupcast included) has to pay.
//
// With --tar DIR (send) and --untar (receive) the stream is `tar -c` of a directory, unpacked by
// `tar -x` on the receiver, which then syncs its file system once (--fsync): the baseline of a tree.
//
// Framing is the connection itself: the sender half-closes when the file is sent, the receiver
// answers with one JSON line ({bytes, seconds, sha256?}) once the bytes are on disk, then closes.
//
//   node bench/baselines/fanout.js receive --mode tls --port 47800 --out /tmp/r1 [--count 1] [--fsync]
//   node bench/baselines/fanout.js send --mode tls --file big.bin --receivers 10.77.1.2:47800,[fd77::3]:47800
//   node bench/baselines/fanout.js send --mode tls --tar ./tree --receivers …   (receivers with --untar)
//
// Each command prints exactly one JSON line of results on stdout; the receiver also prints
// {"event":"listening","port":P} on stderr when it is ready to accept.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, webcrypto } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, stat } from 'node:fs/promises';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

x509.cryptoProvider.set(webcrypto);

const DEFAULT_CIPHER = 'TLS_AES_128_GCM_SHA256';
const DEFAULT_CHUNK_KIB = 64;
const DEFAULT_TIMEOUT_S = 600;
const DEFAULT_CONNECT_TIMEOUT_S = 10;
const CONNECT_RETRY_MS = 100;
const MAX_ACK_BYTES = 4096;
const DEV_NULL = '/dev/null';

const USAGE = `usage:
  fanout.js send    --mode raw|tls --file F|--tar DIR --receivers host:port[,host:port…]
                    [--cipher ${DEFAULT_CIPHER}] [--chunk-kib ${DEFAULT_CHUNK_KIB}]
                    [--connect-timeout-s ${DEFAULT_CONNECT_TIMEOUT_S}] [--timeout-s ${DEFAULT_TIMEOUT_S}]
  fanout.js receive --mode raw|tls --port P --out DIR|${DEV_NULL} [--host ::] [--count 1] [--fsync] [--untar]
                    [--cipher ${DEFAULT_CIPHER}] [--timeout-s ${DEFAULT_TIMEOUT_S}]`;

// ------------------------------------------------------------------------------------------------
// Measurements

function cpuSeconds(since) {
  const used = process.cpuUsage(since);
  return { cpuSeconds: (used.user + used.system) / 1e6, cpuUserSeconds: used.user / 1e6, cpuSystemSeconds: used.system / 1e6 };
}

function maxRssBytes() {
  return process.resourceUsage().maxRSS * 1024; // reported in KiB
}

function round(n, digits = 4) {
  return Number(n.toFixed(digits));
}

// ------------------------------------------------------------------------------------------------
// TLS identity: a throwaway Ed25519 self-signed certificate per process

async function makeIdentity(commonName) {
  const keys = await webcrypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    signingAlgorithm: { name: 'Ed25519' },
    keys,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem'), key };
}

function tlsOptions(identity, cipher) {
  // Peers are not verified (rejectUnauthorized false), but both sides present a certificate, so the
  // handshake costs what a mutual-TLS handshake costs.
  return { ...identity, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: cipher, rejectUnauthorized: false };
}

// ------------------------------------------------------------------------------------------------
// tar: a child whose CPU is counted too (the shell's `times` prints its children's user and system time)

/** Runs `tar ARGS` under sh and resolves with the tar's CPU seconds once it exited 0. */
function tarChild(args, stdio) {
  const child = spawn('sh', ['-c', 'tar "$@" && times >&2', 'sh', ...args], { stdio: [...stdio, 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s) => (err += s));
  const done = once(child, 'close').then(([code]) => {
    if (code !== 0) throw new Error(`tar ${args.join(' ')} exited ${code}: ${err.slice(0, 500)}`);
    // `times`: the shell's own user/system time, then its children's, as "0m0.120s 0m0.340s".
    const seconds = [...err.matchAll(/(\d+)m([\d.]+)s/g)].slice(2).reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
    return seconds;
  });
  done.catch(() => {}); // awaited by the caller
  return { child, done };
}

// ------------------------------------------------------------------------------------------------
// Sender

function parseReceiver(spec) {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(spec) ?? /^([^:]+):(\d+)$/.exec(spec);
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad receiver "${spec}", want host:port or [v6]:port`);
  return { host: m[1], port, label: spec };
}

function connectOnce(mode, target, identity, cipher) {
  return new Promise((resolve, reject) => {
    const opts = { host: target.host, port: target.port, allowHalfOpen: true };
    const socket =
      mode === 'tls'
        ? tls.connect({ ...opts, ...tlsOptions(identity, cipher) }, () => settle(null))
        : net.connect(opts, () => settle(null));
    const settle = (err) => {
      socket.off('error', settle);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(socket);
    };
    socket.once('error', settle);
  });
}

/** Connects, retrying while the receiver is not listening yet, for at most timeoutMs. */
async function connect(mode, target, identity, cipher, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connectOnce(mode, target, identity, cipher);
    } catch (err) {
      if (err.code !== 'ECONNREFUSED' || Date.now() + CONNECT_RETRY_MS > deadline) throw err;
      await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
    }
  }
}

/** Collects the receiver's one-line answer, refusing more than MAX_ACK_BYTES. */
function readAck(socket) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    socket.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_ACK_BYTES) socket.destroy(new Error('receiver answer too long'));
      else chunks.push(chunk);
    });
    socket.once('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(new Error('receiver closed without a valid answer', { cause: err }));
      }
    });
    socket.once('error', reject);
  });
}

async function sendTo(socket, file, tarDir, chunkBytes) {
  const started = performance.now();
  const ack = readAck(socket);
  ack.catch(() => {}); // surfaced by the await below; avoid an unhandled rejection if pipeline fails first
  const tar = tarDir ? tarChild(['-c', '-f', '-', '-C', tarDir, '.'], ['ignore', 'pipe']) : undefined;
  await pipeline(tar ? tar.child.stdout : createReadStream(file, { highWaterMark: chunkBytes }), socket); // ends = half-close
  const tarCpuSeconds = tar ? await tar.done : 0;
  const answer = await ack;
  return { answer, seconds: (performance.now() - started) / 1000, tarCpuSeconds };
}

async function send(args) {
  const mode = args.mode;
  const cipher = args.cipher;
  const targets = args.receivers.split(',').filter(Boolean).map(parseReceiver);
  if (targets.length === 0) throw new Error('no receivers');
  const fileBytes = args.tar ? undefined : (await stat(args.file)).size;
  const identity = mode === 'tls' ? await makeIdentity('groupcast-bench-sender') : undefined;

  const cpuStart = process.cpuUsage();
  const t0 = performance.now();
  const sockets = await Promise.all(
    targets.map((t) => connect(mode, t, identity, cipher, Number(args['connect-timeout-s']) * 1000)),
  );
  const t1 = performance.now();
  const chunkBytes = Number(args['chunk-kib']) * 1024;
  const results = await Promise.all(sockets.map((s) => sendTo(s, args.file, args.tar, chunkBytes)));
  const t2 = performance.now();

  const perReceiver = results.map((r, i) => ({
    receiver: targets[i].label,
    bytes: r.answer.bytes,
    seconds: round(r.seconds),
    receiverSeconds: r.answer.seconds,
    ...(args.tar ? { unpacked: r.answer.unpacked === true } : {}),
    ...(r.answer.sha256 ? { sha256: r.answer.sha256 } : {}),
  }));
  const totalBytes = perReceiver.reduce((sum, r) => sum + r.bytes, 0);
  const wallSeconds = (t2 - t1) / 1000;
  // A tar stream's length is known only once sent: every receiver must have had all of the same.
  const expectedBytes = fileBytes ?? perReceiver[0].bytes;
  const complete = expectedBytes > 0 && perReceiver.every((r) => r.bytes === expectedBytes && r.unpacked !== false);
  const negotiated = mode === 'tls' ? sockets[0].getCipher()?.name : undefined;
  emitResult({
    role: 'send',
    mode,
    ...(negotiated ? { cipher: negotiated } : {}),
    ...(args.tar ? { tar: args.tar } : { file: args.file }),
    fileBytes: expectedBytes,
    receivers: targets.length,
    complete,
    totalBytes,
    connectSeconds: round((t1 - t0) / 1000),
    wallSeconds: round(wallSeconds),
    aggregateMiBps: round(totalBytes / 2 ** 20 / wallSeconds, 1),
    ...roundAll(cpuSeconds(cpuStart)),
    ...(args.tar ? { tarCpuSeconds: round(results.reduce((sum, r) => sum + r.tarCpuSeconds, 0)) } : {}),
    maxRssBytes: maxRssBytes(),
    perReceiver,
  });
  if (!complete) process.exitCode = 1;
}

// ------------------------------------------------------------------------------------------------
// Receiver

function counter(hash) {
  let bytes = 0;
  const stream = new Transform({
    transform(chunk, _encoding, callback) {
      bytes += chunk.length;
      hash?.update(chunk);
      callback(null, chunk);
    },
  });
  return { stream, bytes: () => bytes };
}

async function fsyncFile(path) {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Syncs the file system holding `dir` (syncfs, as a member does once for a tree). */
async function syncFileSystemOf(dir) {
  const sync = spawn('sync', ['-f', dir], { stdio: 'ignore' });
  const [code] = await once(sync, 'close');
  if (code !== 0) throw new Error(`sync -f ${dir} exited ${code}`);
}

async function receiveOne(socket, mode, outPath, fsync, untarDir) {
  const started = performance.now();
  const hash = mode === 'tls' ? createHash('sha256') : undefined;
  const count = counter(hash);
  let tarCpuSeconds = 0;
  if (untarDir) {
    await mkdir(untarDir, { recursive: true });
    // --ignore-zeros: tar reads to the stream's end instead of stopping at the archive's end marker and
    // closing its input under the last bytes of padding still being written.
    const tar = tarChild(['-x', '--ignore-zeros', '-f', '-', '-C', untarDir], ['pipe', 'ignore']);
    await pipeline(socket, count.stream, tar.child.stdin);
    tarCpuSeconds = await tar.done;
    if (fsync) await syncFileSystemOf(untarDir);
  } else {
    await pipeline(socket, count.stream, createWriteStream(outPath));
    if (fsync && outPath !== DEV_NULL) await fsyncFile(outPath);
  }
  const result = {
    bytes: count.bytes(),
    tarCpuSeconds,
    seconds: round((performance.now() - started) / 1000),
    ...(hash ? { sha256: hash.digest('hex'), peerCertificate: Object.keys(socket.getPeerCertificate()).length > 0 } : {}),
  };
  const answer = { bytes: result.bytes, seconds: result.seconds, sha256: result.sha256, ...(untarDir ? { unpacked: true } : {}) };
  await new Promise((resolve) => socket.end(`${JSON.stringify(answer)}\n`, resolve));
  return result;
}

async function receive(args) {
  const mode = args.mode;
  const expected = Number(args.count);
  if (!Number.isInteger(expected) || expected < 1) throw new Error('--count must be a positive integer');
  const port = Number(args.port);
  const identity = mode === 'tls' ? await makeIdentity('groupcast-bench-receiver') : undefined;
  const outPathFor = (i) => (args.out === DEV_NULL ? DEV_NULL : join(args.out, `fanout-${port}-${i}.bin`));
  if (args.untar && args.out === DEV_NULL) throw new Error('--untar needs an --out directory');
  const untarDirFor = (i) => (args.untar ? join(args.out, `fanout-${port}-${i}`) : undefined);

  const cpuStart = process.cpuUsage();
  const connections = [];
  let firstAccept;
  let allAccepted;
  const accepted = new Promise((resolve) => (allAccepted = resolve));
  const onConnection = (socket) => {
    if (connections.length >= expected) {
      socket.destroy();
      return;
    }
    firstAccept ??= performance.now();
    socket.on('error', () => {}); // reported through pipeline
    const result = receiveOne(socket, mode, outPathFor(connections.length), args.fsync, untarDirFor(connections.length));
    result.catch(() => {}); // awaited below with the others; not unhandled while accepts are pending
    connections.push(result);
    if (connections.length === expected) allAccepted();
  };
  const server =
    mode === 'tls'
      ? tls.createServer({ ...tlsOptions(identity, args.cipher), requestCert: true, allowHalfOpen: true }, onConnection)
      : net.createServer({ allowHalfOpen: true }, onConnection);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, args.host, resolve);
  });
  process.stderr.write(`${JSON.stringify({ event: 'listening', port: server.address().port })}\n`);
  await accepted;
  server.close();
  const results = await Promise.all(connections);
  const seconds = (performance.now() - firstAccept) / 1000;
  const bytes = results.reduce((sum, r) => sum + r.bytes, 0);
  emitResult({
    role: 'receive',
    mode,
    port,
    out: args.out,
    connections: results.length,
    bytes,
    seconds: round(seconds),
    MiBps: round(bytes / 2 ** 20 / seconds, 1),
    ...(mode === 'tls' ? { sha256: results.map((r) => r.sha256), peerCertificate: results.every((r) => r.peerCertificate) } : {}),
    ...roundAll(cpuSeconds(cpuStart)),
    ...(args.untar ? { tarCpuSeconds: round(results.reduce((sum, r) => sum + r.tarCpuSeconds, 0)) } : {}),
    maxRssBytes: maxRssBytes(),
  });
}

// ------------------------------------------------------------------------------------------------
// CLI

function roundAll(obj) {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, round(v)]));
}

function emitResult(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function parse(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      mode: { type: 'string' },
      file: { type: 'string' },
      receivers: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string', default: '::' },
      out: { type: 'string' },
      count: { type: 'string', default: '1' },
      fsync: { type: 'boolean', default: false },
      tar: { type: 'string' },
      untar: { type: 'boolean', default: false },
      cipher: { type: 'string', default: DEFAULT_CIPHER },
      'chunk-kib': { type: 'string', default: String(DEFAULT_CHUNK_KIB) },
      'connect-timeout-s': { type: 'string', default: String(DEFAULT_CONNECT_TIMEOUT_S) },
      'timeout-s': { type: 'string', default: String(DEFAULT_TIMEOUT_S) },
    },
  });
  const command = positionals[0];
  const required = { send: [values.tar === undefined ? 'file' : 'tar', 'receivers'], receive: ['port', 'out'] }[command];
  if (!required || positionals.length !== 1) throw new Error(USAGE);
  if (values.mode !== 'raw' && values.mode !== 'tls') throw new Error(`--mode must be raw or tls\n${USAGE}`);
  for (const name of required) if (values[name] === undefined) throw new Error(`--${name} is required\n${USAGE}`);
  return { command, args: values };
}

async function main() {
  let parsed;
  try {
    parsed = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  const { command, args } = parsed;
  const timeoutS = Number(args['timeout-s']);
  // The whole run is bounded: a stuck peer ends it with an error instead of hanging a benchmark.
  const watchdog = setTimeout(() => {
    process.stderr.write(`${JSON.stringify({ error: `timed out after ${timeoutS} s` })}\n`);
    process.exit(1);
  }, timeoutS * 1000);
  watchdog.unref();
  await (command === 'send' ? send(args) : receive(args));
}

main().catch((err) => {
  process.stderr.write(`${JSON.stringify({ error: err.message, code: err.code })}\n`);
  process.exit(1);
});
