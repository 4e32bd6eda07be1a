import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ErrorCode, GroupcastError, isGroupcastError, type Logger } from '@groupcast/shared';

/**
 * The operator's channel to the running daemon: a Unix socket in the (owner-only) state directory,
 * itself mode 0600, speaking newline-delimited JSON. A request `{id, method, params}` is answered by
 * any number of `{id, event}` lines and then one `{id, result}` or `{id, error: {code, message}}`.
 */
export const SOCKET_NAME = 'control.sock';
const MAX_LINE = 1 << 20;

export type Handler = (params: Record<string, unknown>, emit: (event: unknown) => void, signal: AbortSignal) => Promise<unknown>;

export function controlSocketPath(stateDir: string): string {
  return join(stateDir, SOCKET_NAME);
}

export class ControlSocket {
  private server: Server | undefined;
  private readonly connections = new Set<Socket>();

  constructor(private readonly options: { log: Logger; stateDir: string; handlers: Record<string, Handler> }) {}

  async start(): Promise<void> {
    const path = controlSocketPath(this.options.stateDir);
    await rm(path, { force: true });
    const server = createServer((socket) => this.serve(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
  }

  private serve(socket: Socket): void {
    this.connections.add(socket);
    const aborter = new AbortController();
    socket.on('close', () => {
      this.connections.delete(socket);
      aborter.abort('operator disconnected');
    });
    socket.on('error', () => undefined);
    socket.on('data', () => {
      if (socket.bytesRead > MAX_LINE * 16) socket.destroy();
    });
    const lines = createInterface({ input: socket, crlfDelay: Infinity });
    lines.on('line', (line) => void this.request(line, socket, aborter.signal));
  }

  private send(socket: Socket, message: object): void {
    if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
  }

  private async request(line: string, socket: Socket, signal: AbortSignal): Promise<void> {
    let id: unknown = null;
    try {
      if (line.length > MAX_LINE) throw new GroupcastError(ErrorCode.USAGE, 'request too large');
      const request = JSON.parse(line) as { id?: unknown; method?: unknown; params?: unknown };
      id = request.id ?? null;
      const handler = typeof request.method === 'string' ? this.options.handlers[request.method] : undefined;
      if (!handler) throw new GroupcastError(ErrorCode.USAGE, `unknown method ${String(request.method)}`);
      const params = typeof request.params === 'object' && request.params !== null ? (request.params as Record<string, unknown>) : {};
      const result = await handler(params, (event) => this.send(socket, { id, event }), signal);
      this.send(socket, { id, result });
    } catch (err) {
      const code = isGroupcastError(err) ? err.code : ErrorCode.USAGE;
      if (!isGroupcastError(err)) this.options.log.warn({ err }, 'control request failed');
      this.send(socket, { id, error: { code, message: (err as Error).message } });
    }
  }

  async close(): Promise<void> {
    for (const socket of this.connections) socket.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(controlSocketPath(this.options.stateDir), { force: true });
  }
}

/** The CLI's side: one request, events as they come, then the result. */
export async function callDaemon<T>(
  stateDir: string,
  method: string,
  params: object,
  onEvent: (event: unknown) => void = () => undefined,
): Promise<T> {
  const path = controlSocketPath(stateDir);
  const socket = createConnection(path);
  return new Promise<T>((resolve, reject) => {
    socket.once('error', (err) => {
      const code = (err as NodeJS.ErrnoException).code;
      const message = code === 'EACCES'
        ? `permission denied on ${path}: run this as the user the server runs as (under systemd: sudo -u groupcast …)`
        : `no group-server is running with state dir ${stateDir} (${code ?? err.message}): start one with "group-server", or name its state dir with --state-dir (the systemd unit uses /var/lib/groupcast-server)`;
      reject(new GroupcastError(ErrorCode.DAEMON_UNREACHABLE, message, { cause: err }));
    });
    let settled = false;
    socket.once('connect', () => {
      socket.write(`${JSON.stringify({ id: 1, method, params })}\n`);
      createInterface({ input: socket, crlfDelay: Infinity }).on('line', (line) => {
      const reply = JSON.parse(line) as { event?: unknown; result?: T; error?: { code: ErrorCode; message: string } };
      if (reply.error) {
        settled = true;
        reject(new GroupcastError(reply.error.code, reply.error.message));
        socket.end();
      } else if ('result' in reply) {
        settled = true;
        resolve(reply.result as T);
        socket.end();
      } else {
        onEvent(reply.event);
      }
      });
    });
    socket.once('close', () => {
      if (!settled) reject(new GroupcastError(ErrorCode.CLOSED, 'daemon closed the control connection'));
    });
  });
}
