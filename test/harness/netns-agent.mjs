// A tiny network probe run inside a host namespace by the harness self-test.
// Reads one JSON command per line on stdin; writes one JSON event per line on stdout.
// It exits when stdin closes, so it never outlives the test that drives it.
//
//   {"op":"udp-listen","id":"m4","family":4,"port":47777,"group":"239.255.77.77","iface":"10.77.1.2"}
//   {"op":"udp-send","id":"s","family":4,"host":"239.255.77.77","port":47777,"iface":"10.77.1.1",
//    "data":"hello","count":40,"intervalMs":50}
//   {"op":"tcp-echo","id":"e","family":4,"port":47778}
//   {"op":"tcp-connect","id":"c","host":"10.77.1.2","port":47778}
//   {"op":"tcp-write","id":"c","data":"ping"}
//
// Events: {"ev":"ready","id"}, {"ev":"udp","id","data","from"}, {"ev":"sent","id","n"},
//         {"ev":"tcp-data","id","data"}, {"ev":"error","id","message"}.

import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';

const MAX_SEND_COUNT = 1000;
const sockets = new Map();
const timers = new Set();
const stoppers = new Map();

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function fail(id, err) {
  emit({ ev: 'error', id, message: String(err?.message ?? err) });
}

function udpSocket(family) {
  return dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', reuseAddr: true, ipv6Only: family === 6 });
}

function udpListen(cmd) {
  const socket = udpSocket(cmd.family);
  sockets.set(cmd.id, socket);
  socket.on('error', (err) => fail(cmd.id, err));
  socket.on('message', (msg, rinfo) => emit({ ev: 'udp', id: cmd.id, data: msg.toString(), from: rinfo.address }));
  socket.bind(cmd.port, cmd.family === 6 ? '::' : '0.0.0.0', () => {
    if (cmd.group) socket.addMembership(cmd.group, cmd.iface);
    emit({ ev: 'ready', id: cmd.id });
  });
}

function udpSend(cmd) {
  const socket = udpSocket(cmd.family);
  let timer;
  const stop = () => {
    clearInterval(timer);
    timers.delete(timer);
  };
  sockets.set(cmd.id, socket);
  stoppers.set(cmd.id, stop);
  socket.on('error', (err) => fail(cmd.id, err));
  socket.on('close', stop);
  socket.bind(0, () => {
    if (cmd.iface) {
      socket.setMulticastInterface(cmd.iface);
      socket.setMulticastTTL(1);
    }
    const count = Math.min(cmd.count ?? 1, MAX_SEND_COUNT);
    let n = 0;
    const sendOne = () => {
      n += 1;
      const seq = n;
      socket.send(`${cmd.data} ${seq}`, cmd.port, cmd.host, (err) => {
        if (err) fail(cmd.id, err);
        else emit({ ev: 'sent', id: cmd.id, n: seq });
      });
      if (n >= count) stop();
    };
    timer = setInterval(sendOne, cmd.intervalMs ?? 50);
    timers.add(timer);
    sendOne();
  });
}

function tcpEcho(cmd) {
  const server = net.createServer((conn) => {
    conn.on('error', () => conn.destroy());
    conn.pipe(conn);
  });
  sockets.set(cmd.id, server);
  server.on('error', (err) => fail(cmd.id, err));
  server.listen(cmd.port, cmd.family === 6 ? '::' : '0.0.0.0', () => emit({ ev: 'ready', id: cmd.id }));
}

function tcpConnect(cmd) {
  const conn = net.connect({ host: cmd.host, port: cmd.port });
  sockets.set(cmd.id, conn);
  conn.setEncoding('utf8');
  conn.on('connect', () => emit({ ev: 'ready', id: cmd.id }));
  conn.on('data', (data) => emit({ ev: 'tcp-data', id: cmd.id, data }));
  conn.on('error', (err) => fail(cmd.id, err));
}

function tcpWrite(cmd) {
  const conn = sockets.get(cmd.id);
  if (!(conn instanceof net.Socket)) fail(cmd.id, new Error('no such connection'));
  else conn.write(cmd.data);
}

function closeSocket(s) {
  try {
    if (s instanceof net.Socket) s.destroy();
    else s?.close();
  } catch {
    // already closed
  }
}

function close(cmd) {
  stoppers.get(cmd.id)?.();
  stoppers.delete(cmd.id);
  closeSocket(sockets.get(cmd.id));
  sockets.delete(cmd.id);
}

const ops = {
  'udp-listen': udpListen,
  'udp-send': udpSend,
  'tcp-echo': tcpEcho,
  'tcp-connect': tcpConnect,
  'tcp-write': tcpWrite,
  close,
};

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    fail(undefined, err);
    return;
  }
  const op = ops[cmd.op];
  if (!op) fail(cmd.id, new Error(`unknown op ${cmd.op}`));
  else {
    try {
      op(cmd);
    } catch (err) {
      fail(cmd.id, err);
    }
  }
});
lines.on('close', () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets.values()) closeSocket(s);
  process.exit(0);
});
