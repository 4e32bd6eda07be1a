// A hostile member for the swarm fault tests, built only from the shared codecs: an id the operator
// allowed in the group joins with a crafted JOIN, connects to the server saying it pulls and serves
// pieces and takes trees (a tree's pieces are numbered over its files, as the manifest's layout says), claims every piece (to the server and to every peer) and answers each REQUEST with the
// right number of wrong bytes. It never writes a file. Logs are JSON lines on stderr (a `msg` each),
// so a test waits on them like on a daemon's.
//
// argv[2]: JSON { stateDir, group, server, tcpPort, udpPort, host }

import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:tls';
import {
  allocDataFrame, ALPN_PEERS, ALPN_PIECES, Bitfield, Capability, DATA_CHUNK, decodeDatagram, decodeManifest, encodeDatagram, encodeFrame,
  filePieces, FrameReader, loadOrCreateIdentity, manifestPieces, NONCE_LENGTH, parsePeerId, peerIdOf, PROTOCOL_VERSION, TLS_CIPHERS,
} from '../../packages/shared/dist/index.js';

const options = JSON.parse(process.argv[2] ?? '{}');
/** JOINs sent before giving up: the server answers the first that arrives. */
const JOIN_ATTEMPTS = 30;
const JOIN_INTERVAL_MS = 500;

const say = (msg, fields = {}) => process.stderr.write(`${JSON.stringify({ level: 30, msg, ...fields })}\n`);
const identity = await loadOrCreateIdentity(options.stateDir, 'hostile');
const me = identity.signer.id;
/** What the server's MANIFESTs (or a tree's TREE parts) said, by transfer: where each piece lies, and how many. */
const transfers = new Map();
/** A tree manifest's TREE parts so far, by transfer. */
const treeParts = new Map();
let servedBad = 0;

const listener = createServer({
  cert: identity.certPem, key: identity.keyPem, requestCert: true, rejectUnauthorized: false,
  minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS, ALPNProtocols: [ALPN_PEERS],
});
listener.on('secureConnection', (socket) => link(socket, undefined));
listener.on('tlsClientError', () => undefined);
await new Promise((resolve) => listener.listen(0, options.host, resolve));
const peerPort = listener.address().port;

await join();
connectToServer();

/** Sends JOIN (unicast to the server's control port) until the ACK comes, bounded. */
async function join() {
  const udp = createSocket('udp4');
  await new Promise((resolve) => udp.bind(0, options.host, resolve));
  const acked = new Promise((resolve) => udp.on('message', (buf) => {
    try {
      const datagram = decodeDatagram(buf);
      if (datagram.message.type === 'ack' && datagram.message.group === options.group) resolve();
    } catch {
      // Not for us.
    }
  }));
  for (let attempt = 0; attempt < JOIN_ATTEMPTS; attempt++) {
    const datagram = encodeDatagram({ type: 'join', group: options.group, proof: Buffer.alloc(0) }, identity.signer, {
      timestamp: Date.now(), nonce: randomBytes(NONCE_LENGTH),
    });
    udp.send(datagram, options.udpPort, options.server);
    const answered = await Promise.race([acked.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), JOIN_INTERVAL_MS))]);
    if (answered) {
      udp.close();
      say('hostile joined', { group: options.group });
      return;
    }
  }
  throw new Error('no JOIN-ACK');
}

function connectToServer() {
  const socket = connect({
    host: options.server, port: options.tcpPort, cert: identity.certPem, key: identity.keyPem, minVersion: 'TLSv1.3',
    ciphers: TLS_CIPHERS, rejectUnauthorized: false, checkServerIdentity: () => undefined, ALPNProtocols: [ALPN_PIECES],
  });
  socket.on('error', (err) => say('hostile server link error', { err: err.message }));
  socket.on('close', () => say('hostile server link closed'));
  socket.once('secureConnect', () => {
    socket.write(encodeFrame({
      type: 'hello', version: PROTOCOL_VERSION, name: 'hostile', caps: { flags: Capability.PIECES | Capability.PEERS | Capability.TREES | Capability.TREE_SWARM, peerPort },
    }));
    say('hostile connected', { peerPort });
  });
  const send = (frame) => socket.write(encodeFrame(frame));
  const reader = new FrameReader((frame) => {
    switch (frame.type) {
      case 'ping':
        send({ type: 'pong', time: frame.time });
        return;
      case 'manifest': {
        const [entry] = frame.manifest.entries;
        const layout = filePieces(entry.size, frame.manifest.pieceSize);
        transfers.set(frame.transfer.toString('hex'), { layout, pieces: layout.count });
        return;
      }
      case 'tree': {
        const hex = frame.transfer.toString('hex');
        const parts = [...(treeParts.get(hex) ?? []), Buffer.from(frame.chunk)];
        treeParts.set(hex, parts);
        if (frame.offset + frame.chunk.length < frame.total) return;
        treeParts.delete(hex);
        const layout = manifestPieces(decodeManifest(Buffer.concat(parts)));
        transfers.set(hex, { layout, pieces: layout.count });
        return;
      }
      case 'peers':
        for (const peer of frame.peers) {
          // Of two members the smaller id dials: the others dial this one's listener.
          if (me < peer.id) dial(peer, frame.transfer);
        }
        return;
      case 'offer': {
        // Claims every piece at once and says it has verified the file: the server lists it as a seed.
        const { pieces } = transfers.get(frame.transfer.toString('hex'));
        send({ type: 'accept', transfer: frame.transfer, offset: 0 });
        send({ type: 'bitfield', transfer: frame.transfer, bits: Bitfield.full(pieces).toWire() });
        send({ type: 'result', transfer: frame.transfer, outcome: 0, message: '' });
        say('hostile pretends to hold everything', { transfer: frame.transfer.toString('hex') });
        return;
      }
      default:
    }
  });
  reader.on('error', (err) => {
    say('hostile server reader error', { err: err.message });
    socket.destroy();
  });
  socket.pipe(reader);
}

const dialed = new Set();
function dial(peer, transfer) {
  const key = `${peer.id}/${transfer.toString('hex')}`;
  if (dialed.has(key)) return;
  dialed.add(key);
  const socket = connect({
    host: peer.address, port: peer.port, cert: identity.certPem, key: identity.keyPem, minVersion: 'TLSv1.3',
    ciphers: TLS_CIPHERS, ALPNProtocols: [ALPN_PEERS], rejectUnauthorized: false, checkServerIdentity: () => undefined,
  });
  socket.once('secureConnect', () => link(socket, transfer));
}

/** A peer link: HELLO and BITFIELD (all pieces), then wrong bytes for every REQUEST. */
function link(socket, dialedFor) {
  socket.on('error', () => undefined);
  const peer = (() => {
    try {
      return parsePeerId(peerIdOf(socket) ?? '');
    } catch {
      return 'unknown';
    }
  })();
  const greet = (transfer) => {
    const { pieces } = transfers.get(transfer.toString('hex')) ?? { pieces: 0 };
    socket.write(Buffer.concat([
      encodeFrame({ type: 'hello', version: PROTOCOL_VERSION, name: 'hostile', caps: { flags: Capability.PIECES | Capability.PEERS | Capability.TREES | Capability.TREE_SWARM, peerPort } }),
      encodeFrame({ type: 'bitfield', transfer, bits: Bitfield.full(pieces).toWire() }),
    ]));
  };
  if (dialedFor) greet(dialedFor);
  const reader = new FrameReader((frame) => {
    switch (frame.type) {
      case 'bitfield':
        if (!dialedFor) greet(frame.transfer);
        say('hostile linked', { peer });
        return;
      case 'ping':
        socket.write(encodeFrame({ type: 'pong', time: frame.time }));
        return;
      case 'request': {
        const t = transfers.get(frame.transfer.toString('hex'));
        if (!t) return;
        const { start, end } = t.layout.span(frame.piece);
        const length = end - start;
        for (let at = 0; at < length; at += DATA_CHUNK) {
          const { frame: data, payload } = allocDataFrame(frame.transfer, start + at, Math.min(DATA_CHUNK, length - at));
          payload.set(randomBytes(payload.length));
          socket.write(data);
        }
        say('hostile served a corrupted piece', { peer, piece: frame.piece, count: ++servedBad });
        return;
      }
      default:
    }
  });
  reader.on('error', () => socket.destroy());
  socket.pipe(reader);
}
