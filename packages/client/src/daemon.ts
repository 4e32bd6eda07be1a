import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import {
  ControlEndpoint, createLogger, loadOrCreateIdentity, serveMetrics, StateLock,
  type Logger, type PeerId,
} from '@groupcast/shared';
import { ServerConnection } from './receive/connection.js';
import { Discovery, type ServerInfo } from './discovery/discovery.js';
import { Invitation } from './discovery/invitation.js';
import { Membership, type Refusal } from './discovery/membership.js';
import { ClientMetrics } from './metrics.js';
import { OnReceive } from './receive/on-receive.js';
import { resolveOptions, type ClientOptions, type ResolvedOptions } from './options.js';
import { ServerPin } from './discovery/pinning.js';
import { PeerNode } from './peer/peer-node.js';
import type { BadPeerEvent, ReceivedEvent, UndeliveredEvent } from './receive/events.js';
import { Receiver } from './receive/receiver.js';
import { StatusFile, type PeerStatus } from './status-file.js';

export interface ClientEvents {
  server: [server: ServerInfo];
  joined: [group: string];
  refused: [group: string, refusal: Refusal];
  /** Every group is refused: nothing left to serve (the CLI exits with EXIT_REFUSED). */
  stranded: [refusals: Array<{ group: string; refusal: Refusal }>];
  connected: [server: PeerId, name: string];
  disconnected: [];
  received: [event: ReceivedEvent];
  declined: [event: UndeliveredEvent];
  failed: [event: UndeliveredEvent];
  badPeer: [event: BadPeerEvent];
}

/** A running member daemon. */
export interface GroupClient extends EventEmitter<ClientEvents> {
  readonly id: PeerId;
  /** The directory files land in (symlinks resolved). */
  readonly downloads: string;
  /** Stops every component, last started first. Safe to call twice. */
  close(): Promise<void>;
}

interface Closable {
  close(): void | Promise<void>;
}

class RunningClient extends EventEmitter<ClientEvents> implements GroupClient {
  readonly started: Closable[] = [];
  private closing: Promise<void> | undefined;

  constructor(
    readonly id: PeerId,
    readonly downloads: string,
    private readonly log: Logger,
  ) {
    super();
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const component of [...this.started].reverse()) {
        try {
          await component.close();
        } catch (err) {
          this.log.warn({ err }, 'component failed to close');
        }
      }
      this.log.info('stopped');
    })();
    return this.closing;
  }
}

function forward<K extends keyof ClientEvents>(from: EventEmitter, to: EventEmitter<ClientEvents>, event: K): void {
  from.on(event, (...args: unknown[]) => (to.emit as (event: K, ...rest: unknown[]) => boolean)(event, ...args));
}

/**
 * Starts a member daemon: state and identity, the pin, the download area, the control plane
 * (discovery, then joins), and — after the first ACK — the data connection. A failure while starting
 * closes whatever had started and rethrows: STATE_DIR (also: another daemon runs on it) / CONFIG / a
 * bind error are the fatal ones.
 */
export async function startClient(options: ClientOptions): Promise<GroupClient> {
  const resolved = resolveOptions(options);
  return StateLock.hold(resolved.stateDir, 'group-client', (lock) => startLocked(options, resolved, lock));
}

async function startLocked(options: ClientOptions, resolved: ResolvedOptions, lock: StateLock): Promise<GroupClient> {
  const log = options.log ?? createLogger({ name: 'group-client', level: 'silent' });
  const clock = options.clock ?? Date.now;

  const identity = await loadOrCreateIdentity(resolved.stateDir, `group-client ${hostname()}`);
  const id = identity.signer.id;
  if (identity.created) log.info({ id }, 'created a new identity');

  const pin = new ServerPin({
    log: log.child({ component: 'pinning' }),
    stateDir: resolved.stateDir,
    trustFirstServer: resolved.trustFirstServer,
    codePrefix: resolved.code?.serverPrefix,
  });
  await pin.load(resolved.serverId);
  const invitation = resolved.code ? await Invitation.open(resolved.code, identity.signer) : undefined;

  const endpoint = new ControlEndpoint({
    log: log.child({ component: 'control' }),
    signer: identity.signer,
    groupAddress: resolved.groupAddress,
    port: resolved.port,
    iface: resolved.iface,
    role: 'client',
    clock,
  });
  const discovery = new Discovery({ log: log.child({ component: 'discovery' }), endpoint, pin, unicast: resolved.unicast, invitation });
  const membership = new Membership({
    log: log.child({ component: 'membership' }),
    endpoint,
    discovery,
    groups: resolved.groups,
    invitation,
    unicast: resolved.unicast,
  });
  const peers = resolved.peerPort === undefined ? undefined : new PeerNode({
    log: log.child({ component: 'peers' }), identity, name: resolved.name, port: resolved.peerPort, host: resolved.iface.address, rate: resolved.peerRate,
  });
  await peers?.start();
  const receiver = new Receiver({
    peers,
    log: log.child({ component: 'receiver' }),
    downloads: resolved.downloads,
    stateDir: resolved.stateDir,
    wants: (group) => membership.wants(group),
    keepOld: resolved.keepOld,
  });
  const connection = new ServerConnection({
    log: log.child({ component: 'connection' }),
    identity,
    name: resolved.name,
    pin,
    discovery,
    receiver,
    clock,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs,
  });

  await receiver.start();
  const client = new RunningClient(id, receiver.root, log);
  for (const event of ['received', 'declined', 'failed', 'badPeer'] as const) forward(receiver, client, event);
  for (const event of ['joined', 'refused', 'stranded'] as const) forward(membership, client, event);
  for (const event of ['connected', 'disconnected'] as const) forward(connection, client, event);
  forward(discovery, client, 'server');

  // First in, last out: the lock is given up after everything else has stopped.
  client.started.push(lock, pin, ...(peers ? [peers] : []), receiver);
  if (peers) log.info({ peerPort: peers.port }, 'serving pieces to peers');
  const peerStatus = peers && ((): PeerStatus => ({ port: peers.port, links: peers.links, ...receiver.swarmCounters }));
  const status = new StatusFile({
    stateDir: resolved.stateDir, id, name: resolved.name, downloads: receiver.root, groups: resolved.groups, log: log.child({ component: 'status' }),
    peers: peerStatus,
  });
  await status.watch(client);
  client.started.push(status);
  const onReceive = resolved.onReceive && new OnReceive({ ...resolved.onReceive, log: log.child({ component: 'on-receive' }) });
  if (onReceive) {
    client.on('received', (event) => onReceive.run(event));
    client.started.push(onReceive);
  }
  try {
    await endpoint.open();
    client.started.push(endpoint);
    if (resolved.metrics) {
      client.started.push(await serveMetrics(new ClientMetrics(endpoint, client, onReceive, peers && { node: peers, counters: receiver.swarmCounters }), resolved.metrics, log.child({ component: 'metrics' })));
    }
    log.info(
      { id, interface: resolved.iface.name, address: resolved.iface.address, group: `${resolved.groupAddress}:${resolved.port}`, downloads: receiver.root },
      'control plane open',
    );
    membership.start();
    client.started.push(membership);
    // Dial as soon as the server is found, moves or restarts, instead of sitting out a backoff grown while it was away.
    discovery.on('server', () => connection.nudge());
    discovery.on('restart', () => connection.nudge());
    // A revoke ends the link without a word: the answers to fresh JOINs tell it from network trouble.
    connection.on('disconnected', () => membership.recheck());
    discovery.start();
    client.started.push(discovery);
    // The data plane waits for the first ACK: until then the server would not admit us anyway.
    membership.once('joined', () => {
      if (client.closed) return;
      connection.start();
      client.started.push(connection);
    });
  } catch (err) {
    await client.close();
    throw err;
  }
  if (resolved.groups.length === 0) log.warn('no groups to join (use --join); only discovering');
  if (!pin.pinned && invitation) log.info({ serverPrefix: invitation.serverPrefix }, 'no server pinned yet: will pin the server that proves it issued the join code');
  else if (!pin.pinned && !resolved.trustFirstServer) log.warn('no server pinned; will report servers found but not join them');
  return client;
}
