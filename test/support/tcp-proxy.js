import { createConnection, createServer } from 'node:net';

/**
 * A TCP relay on 127.0.0.1 that a test controls, to break a connection the way a network does.
 * It listens first (so its port can be given to the daemon that must advertise it), relays each
 * accepted connection to `target` once that is set, and `cut()` ends every relayed connection at
 * once: both ends see their connection drop; new connections are relayed again.
 */
export class TcpProxy {
  /** @type {Set<import('node:net').Socket>} */ sockets = new Set();
  /** Connections accepted so far. */
  accepted = 0;
  /** @type {number | undefined} */ target;
  server = createServer((client) => this.relay(client));

  /** @returns {Promise<number>} the port it listens on */
  async listen() {
    await new Promise((resolveListen, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolveListen(undefined));
    });
    const address = this.server.address();
    if (!address || typeof address !== 'object') throw new Error('proxy has no address');
    return address.port;
  }

  /** @param {import('node:net').Socket} client */
  relay(client) {
    this.accepted++;
    if (this.target === undefined) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: '127.0.0.1', port: this.target });
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Drops every relayed connection, both sides at once, with a reset. Returns how many sockets were cut. */
  cut() {
    const count = this.sockets.size;
    for (const socket of [...this.sockets]) socket.resetAndDestroy();
    return count;
  }

  async close() {
    this.cut();
    await new Promise((resolveClose) => this.server.close(() => resolveClose(undefined)));
  }
}
