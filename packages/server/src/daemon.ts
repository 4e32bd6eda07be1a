import {
  ControlEndpoint, familyOf, listenFailure, loadOrCreateIdentity, parseMetricsAddress, resolveInterface, serveMetrics,
  shortId, StateLock, TokenBucket, type Logger, type MetricsEndpoint, type PeerId,
} from '@groupcast/shared';
import { Announcer } from './control/announcer.js';
import type { ServerSettings } from './config.js';
import { ControlPlane } from './control/control-plane.js';
import { ControlSocket } from './operator/control-socket.js';
import { DataPlane } from './delivery/data-plane.js';
import { Distributor } from './delivery/distributor.js';
import { Invites } from './control/invites.js';
import { Membership } from './control/membership.js';
import { ServerMetrics } from './metrics.js';
import { operations, statusOf, type ServerDescription } from './operator/operations.js';
import { Outbox } from './delivery/outbox.js';
import { ContentStore } from './delivery/store.js';
import { requireTokenOffLoopback } from './web/access.js';
import { LiveStatus } from './web/live-status.js';
import { webView } from './web/web-view.js';

export interface RunningServer {
  id: PeerId;
  tcpPort: number;
  udpPort: number;
  close(): Promise<void>;
}

export const DEFAULT_KEEP_MS = 7 * 24 * 3600 * 1000;

/**
 * Composes the server from its parts and starts them in dependency order; close() stops them in
 * reverse. Only an unusable state directory (or one another daemon runs on) or a failed bind makes
 * start fail.
 */
export function startServer(settings: ServerSettings, log: Logger): Promise<RunningServer> {
  return StateLock.hold(settings.stateDir, 'group-server', (lock) => startLocked(settings, log, lock));
}

async function startLocked(settings: ServerSettings, log: Logger, lock: StateLock): Promise<RunningServer> {
  const { stateDir } = settings;
  const metricsAddress = settings.metrics ? parseMetricsAddress(settings.metrics) : undefined;
  if (metricsAddress) requireTokenOffLoopback(metricsAddress.host, settings.webToken);
  const identity = await loadOrCreateIdentity(stateDir, `group-server ${settings.name}`);
  const id = identity.signer.id;
  if (identity.created) log.info({ id }, 'created server identity');

  const membership = new Membership({
    log: log.child({ component: 'membership' }),
    groups: settings.groups,
    stateDir,
    maxOpenMembers: settings.maxOpenMembers,
    openMemberExpiryMs: settings.openMemberExpiryMs,
  });
  await membership.load();
  const invites = new Invites({ log: log.child({ component: 'invites' }), stateDir, signer: identity.signer, membership });
  await invites.load();
  const store = new ContentStore(stateDir);
  await store.open();
  const keepMs = settings.keepMs ?? DEFAULT_KEEP_MS;
  const outbox = new Outbox({ stateDir, log: log.child({ component: 'outbox' }), keepMs });
  await outbox.load();

  const startedAt = Date.now();
  const metrics = settings.metrics ? new ServerMetrics() : undefined;
  const iface = resolveInterface(settings.interface, familyOf(settings.groupAddress));
  const endpoint = new ControlEndpoint({
    log: log.child({ component: 'control' }),
    signer: identity.signer,
    groupAddress: settings.groupAddress,
    port: settings.port,
    iface,
    role: 'server',
  });
  await endpoint.open().catch((err: unknown) => {
    throw listenFailure(err, 'UDP', iface.address, settings.port, 'another program holds it without sharing; choose another with --port');
  });

  let distributor: Distributor | undefined;
  const dataPlane = new DataPlane({
    log: log.child({ component: 'data' }),
    identity,
    membership,
    host: iface.address,
    port: settings.tcpPort,
    serverName: settings.name,
    heartbeatTimeoutMs: settings.heartbeatTimeoutMs,
    isLive: (transfer, member) => outbox.isLive(transfer, member),
    onSession: (session) => {
      metrics?.watchSession(session);
      membership.setOnline(session.id, true, { name: session.name, address: session.address });
      log.info({ member: session.id, name: session.name, address: session.address, groups: membership.joinedGroups(session.id) }, 'member online');
      session.once('closed', () => {
        if (dataPlane.session(session.id)) return;
        membership.setOnline(session.id, false);
        log.info({ member: session.id, name: session.name }, 'member offline');
      });
      distributor?.wake(session.id);
    },
  });
  await dataPlane.start().catch((err: unknown) => {
    endpoint.close();
    throw listenFailure(err, 'TCP', iface.address, settings.tcpPort, 'another group-server? choose another with --tcp-port');
  });

  distributor = new Distributor({
    log: log.child({ component: 'distributor' }),
    outbox,
    store,
    membership,
    session: (member) => dataPlane.session(member),
    concurrency: settings.concurrency,
    keepMs,
    backlog: settings.backlog,
    rate: settings.rate === undefined ? undefined : new TokenBucket(settings.rate),
  });
  const running = distributor;
  membership.on('joined', (member, group) => {
    running.memberJoined(member, group).catch((err: unknown) => log.error({ err, member, group }, 'cannot queue backlog'));
  });
  membership.on('revoked', (member, group) => running.revoke(member, group, `access to ${group} revoked`));
  await running.start();
  membership.start();

  // What members are told to dial: the data plane's own port unless a forwarder sits in front of it.
  const advertisedPort = (): number => settings.advertisePort ?? dataPlane.port;
  const controlPlane = new ControlPlane({
    log: log.child({ component: 'control' }),
    endpoint,
    membership,
    tcpPort: advertisedPort,
    invites,
  });
  controlPlane.start();
  const announcer = new Announcer({ endpoint, name: settings.name, tcpPort: advertisedPort, groups: () => membership.groupInfo() });
  announcer.start();

  metrics?.register({ endpoint, dataPlane, controlPlane, membership, outbox, distributor: running });
  let metricsEndpoint: MetricsEndpoint | undefined;

  const describe = (): ServerDescription => ({
    id,
    name: settings.name,
    pid: process.pid,
    startedAt,
    configFile: settings.configFile ?? null,
    metrics: metricsEndpoint ? `${metricsEndpoint.address}:${metricsEndpoint.port}` : null,
    interface: iface.address,
    groupAddress: settings.groupAddress,
    udpPort: settings.port,
    tcpPort: dataPlane.port,
    stateDir,
    datagrams: endpoint.counters,
    connections: dataPlane.counters,
    control: controlPlane.counters,
    invites: invites.counters,
    membership: membership.counters,
  });
  const handlers = operations({ membership, distributor: running, outbox, dataPlane, invites, describe });
  const controlSocket = new ControlSocket({ log: log.child({ component: 'control-socket' }), stateDir, handlers });
  await controlSocket.start();

  // The web view shares the metrics listener: one port to open or firewall, one token rule.
  const live = metrics ? new LiveStatus({ log: log.child({ component: 'web' }), status: statusOf(handlers), distributor: running, membership }) : undefined;
  metricsEndpoint = metrics && metricsAddress && live
    ? await serveMetrics(metrics, metricsAddress, log.child({ component: 'metrics' }), webView({ live, token: settings.webToken }))
    : undefined;

  log.info(
    { id, interface: `${iface.name} ${iface.address}`, group: `${settings.groupAddress}:${settings.port}`, tcpPort: dataPlane.port, stateDir, config: settings.configFile, groups: membership.groupInfo().map((g) => g.name) },
    'group-server started',
  );
  if (settings.defaultGroups) {
    log.info(
      {
        invite: `group-server invite <group> --state-dir ${stateDir}`,
        allow: `group-server members allow <group> <member-id> --state-dir ${stateDir}`,
      },
      `running on the built-in groups, which are closed: invite a member with a one-time code ("group-server invite Developers", then "group-client --join Developers --code <code>" on the member), or allow its id (printed by "group-client id"); this server's id is ${shortId(id)}…`,
    );
  }

  let closing: Promise<void> | undefined;
  return {
    id,
    tcpPort: dataPlane.port,
    udpPort: settings.port,
    close: () => {
      closing ??= (async () => {
        live?.close();
        await metricsEndpoint?.close();
        await controlSocket.close();
        announcer.close();
        endpoint.close();
        await running.close();
        await dataPlane.close();
        await outbox.close();
        await membership.close();
        await lock.close();
        log.info('group-server stopped');
      })();
      return closing;
    },
  };
}
