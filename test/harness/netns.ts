// Multi-host test topologies built from Linux network namespaces.
//
//   host ns "h0" ──veth── ┐
//   host ns "h1" ──veth── ├─ br0 (in a bridge ns of its own)
//   host ns "h2" ──veth── ┘
//
// Nothing here touches the namespace the test runs in: every link is created from inside the
// bridge namespace with its peer placed straight into a host namespace. Namespace names carry
// the creator's pid, so a later run can remove what a crashed run left behind.

import {
  execFileSync,
  spawn as nodeSpawn,
  type ChildProcess,
  type SpawnOptions,
} from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';

export interface TopologyOptions {
  /** Number of host namespaces, 1..64. */
  hosts: number;
  /** Give each host an IPv4 address in 10.77.<k>.0/24 (default true). */
  ipv4?: boolean;
  /** Give each host an IPv6 ULA in fd77:0:0:<k>::/64 (default true); false disables IPv6 in the host. */
  ipv6?: boolean;
  /** Short tag ([a-z0-9], up to 8) put into namespace names so `ip netns list` shows who made them. */
  prefix?: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when the process ended on a signal. */
  code: number | null;
}

export interface ExecOptions {
  /** Kill the process and reject after this long (default 30 000 ms). */
  timeoutMs?: number;
  /** Written to the process's stdin, which is then closed. */
  input?: string;
}

export interface Host {
  /** "h0", "h1", … */
  name: string;
  index: number;
  /** Network namespace name, usable with `ip netns exec`. */
  ns: string;
  /** IPv4 address without prefix length, e.g. "10.77.1.1". */
  ipv4?: string;
  /** IPv6 ULA without prefix length, e.g. "fd77:0:0:1::1". */
  ipv6?: string;
  /** The host's interface towards the bridge (same name in every host). */
  ifname: string;
  /** Runs `ip netns exec <ns> cmd args…`; the process is killed by pid on destroy(). */
  spawn(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Runs a command to completion inside the namespace. Rejects only on spawn failure or timeout. */
  exec(cmd: string, args?: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Takes the bridge-side end of the host's link down: packets both ways are dropped silently. */
  cutLink(): Promise<void>;
  /** Brings the link back and waits until it forwards again. */
  restoreLink(): Promise<void>;
  /** Drops multicast UDP to and from this host at the bridge, and removes the host's 224.0.0.0/4 route. */
  blockMulticast(): Promise<void>;
  unblockMulticast(): Promise<void>;
  /** Caps traffic towards this host at the bridge (HTB), e.g. so that a transfer lasts long enough to cut. */
  limitRate(mbit: number): Promise<void>;
  unlimitRate(): Promise<void>;
  /**
   * Shapes the host's link both ways with tc tbf, like a switch port of `mbit` Mbit/s: on the host's
   * interface (what it sends) and on the bridge port (what it receives). Replaces limitRate's HTB.
   */
  shapeLink(mbit: number): Promise<void>;
}

export interface Topology {
  hosts: Host[];
  bridgeNs: string;
  /** e.g. "10.77.1.0/24" when ipv4 is on. */
  subnet4?: string;
  /** e.g. "fd77:0:0:1::/64" when ipv6 is on. */
  subnet6?: string;
  /** Kills every process spawned in the topology and deletes its namespaces. Safe to call twice. */
  destroy(): Promise<void>;
}

export type NetnsAvailability = { ok: true } | { ok: false; reason: string };

const NAME_PREFIX = 'gcns';
const STALE_NAME = /^gcns-(\d+)-/;
const NETNS_DIR = '/run/netns';
const HOST_IFNAME = 'gcnet0';
const BRIDGE_IFNAME = 'br0';
const SINK_IFNAME = 'sink0';
const SINK_PEER_IFNAME = 'sink1';
const MAX_HOSTS = 64;
const IP_TIMEOUT_MS = 10_000;
const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
const LINK_WAIT_MS = 5_000;
const LINK_POLL_MS = 20;
const KILL_WAIT_MS = 2_000;

// ---------------------------------------------------------------------------------------------
// Running commands

function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = nodeSpawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    collect(child, timeoutMs, opts.input, resolve, reject);
  });
}

function collect(
  child: ChildProcess,
  timeoutMs: number,
  input: string | undefined,
  resolve: (r: ExecResult) => void,
  reject: (e: Error) => void,
): void {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin?.on('error', () => {}); // the process may exit before reading its input
  child.stdin?.end(input ?? '');
  const timer = setTimeout(() => {
    killPid(child.pid, 'SIGKILL');
    reject(new Error(`timed out after ${timeoutMs} ms: ${child.spawnargs.join(' ')}`));
  }, timeoutMs);
  child.once('error', (err) => {
    clearTimeout(timer);
    reject(err);
  });
  child.once('close', (code) => {
    clearTimeout(timer);
    resolve({ stdout, stderr, code });
  });
}

async function ip(args: readonly string[]): Promise<string> {
  const r = await run('ip', args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

async function inNs(ns: string, cmd: string, args: readonly string[]): Promise<string> {
  return ip(['netns', 'exec', ns, cmd, ...args]);
}

function killPid(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---------------------------------------------------------------------------------------------
// Availability

let availability: Promise<NetnsAvailability> | undefined;

/** Whether this process can build topologies; the reason is one short line for a skip message. */
export function netnsAvailable(): Promise<NetnsAvailability> {
  availability ??= probe();
  return availability;
}

async function probe(): Promise<NetnsAvailability> {
  if (process.platform !== 'linux') return { ok: false, reason: `not Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root' };
  try {
    const v = await run('ip', ['-V'], { timeoutMs: IP_TIMEOUT_MS });
    if (v.code !== 0) return { ok: false, reason: '`ip -V` failed' };
  } catch {
    return { ok: false, reason: '`ip` (iproute2) not found' };
  }
  const name = `${NAME_PREFIX}-${process.pid}-${randomId()}-probe`;
  try {
    await ip(['netns', 'add', name]);
    await ip(['-n', name, 'link', 'add', 'name', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1']);
    await ip(['-n', name, 'link', 'add', BRIDGE_IFNAME, 'type', 'bridge']);
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `cannot create a network namespace: ${firstLine(err)}` };
  } finally {
    await run('ip', ['netns', 'del', name], { timeoutMs: IP_TIMEOUT_MS }).catch(() => undefined);
  }
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0] ?? '';
}

function randomId(): string {
  return randomBytes(4).toString('hex');
}

// ---------------------------------------------------------------------------------------------
// Process-wide bookkeeping: live topologies, exit handlers, stale namespaces

interface Live {
  namespaces: string[];
  children: Set<ChildProcess>;
}

const live = new Set<Live>();
let handlersInstalled = false;
let staleSwept: Promise<void> | undefined;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.once('exit', destroyAllSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      destroyAllSync();
      // Without our listener the default action applies again; keep it unless someone else handles it.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

function destroyAllSync(): void {
  for (const l of live) {
    for (const child of l.children) killPid(child.pid, 'SIGKILL');
    for (const ns of l.namespaces) removeNamespaceSync(ns);
  }
  live.clear();
}

function removeNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    for (const pid of parsePids(pids)) killPid(pid, 'SIGKILL');
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: IP_TIMEOUT_MS });
  } catch {
    // best effort while the process is exiting
  }
}

async function removeNamespace(ns: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', ns], { timeoutMs: IP_TIMEOUT_MS });
  if (pids.code !== 0) return; // already gone
  // Anything still inside was started by this harness (or its children): it would keep the namespace alive.
  for (const pid of parsePids(pids.stdout)) killPid(pid, 'SIGKILL');
  await run('ip', ['netns', 'del', ns], { timeoutMs: IP_TIMEOUT_MS });
}

function parsePids(text: string): number[] {
  return text
    .split('\n')
    .map((s) => Number.parseInt(s, 10))
    .filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
}

/**
 * Deletes harness namespaces whose creating process is gone (left by a crashed run), killing anything
 * still running inside them. createTopology() calls it once per process; returns the names removed.
 */
export async function removeStaleNamespaces(): Promise<string[]> {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return []; // no namespaces at all yet
  }
  const stale = names.filter((n) => {
    const pid = Number(STALE_NAME.exec(n)?.[1]);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !isAlive(pid);
  });
  await Promise.all(stale.map((ns) => removeNamespace(ns).catch(() => undefined)));
  return stale;
}

// ---------------------------------------------------------------------------------------------
// Building a topology

let topologyCounter = 0;

export async function createTopology(opts: TopologyOptions): Promise<Topology> {
  const hostCount = opts.hosts;
  if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > MAX_HOSTS) {
    throw new RangeError(`hosts must be an integer in 1..${MAX_HOSTS}, got ${hostCount}`);
  }
  const tag = opts.prefix ?? '';
  if (!/^[a-z0-9]{0,8}$/.test(tag)) throw new RangeError(`prefix must match [a-z0-9]{0,8}, got "${tag}"`);
  const ipv4 = opts.ipv4 ?? true;
  const ipv6 = opts.ipv6 ?? true;
  if (!ipv4 && !ipv6) throw new RangeError('at least one of ipv4 and ipv6 must be on');

  installExitHandlers();
  staleSwept ??= removeStaleNamespaces().then(() => undefined);
  await staleSwept;

  topologyCounter = (topologyCounter % 250) + 1;
  const k = topologyCounter;
  const base = [NAME_PREFIX, String(process.pid), randomId(), ...(tag ? [tag] : [])].join('-');
  const bridgeNs = `${base}-br`;
  const state: Live = { namespaces: [], children: new Set() };
  live.add(state);

  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= destroyTopology(state);
    return destroyed;
  };

  try {
    await addNamespace(state, bridgeNs);
    await setupBridge(bridgeNs);
    // allSettled: on a failure no host setup may still be adding namespaces while destroy() runs.
    const settled = await Promise.allSettled(
      Array.from({ length: hostCount }, (_, i) =>
        createHost({ state, base, bridgeNs, index: i, k, ipv4, ipv6 }),
      ),
    );
    const hosts = settled.map((r) => {
      if (r.status === 'rejected') throw r.reason;
      return r.value;
    });
    return {
      hosts,
      bridgeNs,
      ...(ipv4 ? { subnet4: `10.77.${k}.0/24` } : {}),
      ...(ipv6 ? { subnet6: `fd77:0:0:${k}::/64` } : {}),
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}

async function addNamespace(state: Live, ns: string): Promise<void> {
  state.namespaces.push(ns); // recorded first, so a half-made namespace is still cleaned up
  await ip(['netns', 'add', ns]);
  await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
}

async function setupBridge(ns: string): Promise<void> {
  // The bridge namespace is pure layer 2: no IPv6 chatter from its ports.
  await writeSysctls(ns, { 'net/ipv6/conf/all/disable_ipv6': '1', 'net/ipv6/conf/default/disable_ipv6': '1' });
  // Snooping off: every port gets every multicast frame, with no dependence on IGMP/MLD timing.
  await ip(['-n', ns, 'link', 'add', BRIDGE_IFNAME, 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0']);
  await ip(['-n', ns, 'link', 'set', BRIDGE_IFNAME, 'up']);
  // Filtered frames are redirected here and discarded: tc has mirred but no drop action on this kernel.
  await ip(['-n', ns, 'link', 'add', SINK_IFNAME, 'type', 'veth', 'peer', 'name', SINK_PEER_IFNAME]);
  await ip(['-n', ns, 'link', 'set', SINK_IFNAME, 'up']);
  await ip(['-n', ns, 'link', 'set', SINK_PEER_IFNAME, 'up']);
}

async function writeSysctls(ns: string, values: Record<string, string>): Promise<void> {
  const script = Object.entries(values)
    .map(([key, value]) => `echo ${value} > /proc/sys/${key}`)
    .join(' && ');
  await inNs(ns, 'sh', ['-c', script]);
}

interface HostParams {
  state: Live;
  base: string;
  bridgeNs: string;
  index: number;
  k: number;
  ipv4: boolean;
  ipv6: boolean;
}

async function createHost(p: HostParams): Promise<Host> {
  const name = `h${p.index}`;
  const ns = `${p.base}-${name}`;
  const port = `p${p.index}`;
  const ipv4 = p.ipv4 ? `10.77.${p.k}.${p.index + 1}` : undefined;
  const ipv6 = p.ipv6 ? `fd77:0:0:${p.k}::${p.index + 1}` : undefined;

  await addNamespace(p.state, ns);
  await writeSysctls(
    ns,
    ipv6
      ? { 'net/ipv6/conf/all/accept_dad': '0', 'net/ipv6/conf/default/accept_dad': '0' }
      : { 'net/ipv6/conf/all/disable_ipv6': '1', 'net/ipv6/conf/default/disable_ipv6': '1' },
  );
  await ip(['-n', p.bridgeNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', HOST_IFNAME, 'netns', ns]);
  await ip(['-n', p.bridgeNs, 'link', 'set', port, 'master', BRIDGE_IFNAME]);
  await ip(['-n', p.bridgeNs, 'link', 'set', port, 'up']);
  if (ipv4) await ip(['-n', ns, 'addr', 'add', `${ipv4}/24`, 'dev', HOST_IFNAME]);
  if (ipv6) await ip(['-n', ns, 'addr', 'add', `${ipv6}/64`, 'dev', HOST_IFNAME, 'nodad']);
  await ip(['-n', ns, 'link', 'set', HOST_IFNAME, 'up']);
  // IPv6 gets "multicast ff00::/8 dev <if> table local" from the kernel when the link comes up.
  if (ipv4) await addMulticastRoute(ns);
  await waitLinkUp(p.bridgeNs, port, ns);

  const link = new HostLink(p.bridgeNs, port, ns, ipv4 !== undefined);
  return {
    name,
    index: p.index,
    ns,
    ...(ipv4 ? { ipv4 } : {}),
    ...(ipv6 ? { ipv6 } : {}),
    ifname: HOST_IFNAME,
    spawn: (cmd, args = [], opts = {}) => spawnTracked(p.state, ns, cmd, args, opts),
    exec: (cmd, args = [], opts = {}) => execTracked(p.state, ns, cmd, args, opts),
    cutLink: () => link.cut(),
    restoreLink: () => link.restore(),
    blockMulticast: () => link.blockMulticast(),
    unblockMulticast: () => link.unblockMulticast(),
    limitRate: (mbit) => link.limitRate(mbit),
    unlimitRate: () => link.unlimitRate(),
    shapeLink: (mbit) => link.shape(mbit),
  };
}

async function addMulticastRoute(ns: string): Promise<void> {
  await ip(['-n', ns, 'route', 'replace', '224.0.0.0/4', 'dev', HOST_IFNAME]);
}

// ---------------------------------------------------------------------------------------------
// Processes inside a host

function spawnTracked(
  state: Live,
  ns: string,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions,
): ChildProcess {
  // `ip netns exec` execs the command in place, so the child's pid is the command's pid.
  const child = nodeSpawn('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  state.children.add(child);
  child.once('exit', () => state.children.delete(child));
  child.once('error', () => state.children.delete(child));
  return child;
}

function execTracked(
  state: Live,
  ns: string,
  cmd: string,
  args: readonly string[],
  opts: ExecOptions,
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(state, ns, cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    collect(child, opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, opts.input, resolve, reject);
  });
}

async function destroyTopology(state: Live): Promise<void> {
  const exits = [...state.children].map((child) => waitExit(child, KILL_WAIT_MS));
  for (const child of state.children) killPid(child.pid, 'SIGKILL');
  await Promise.all(exits);
  // Host namespaces first: their veths vanish with them, then the bridge namespace is empty.
  const [bridge, ...hosts] = state.namespaces;
  await Promise.all(hosts.map((ns) => removeNamespace(ns).catch(() => undefined)));
  if (bridge !== undefined) await removeNamespace(bridge).catch(() => undefined);
  live.delete(state);
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Resolves with the first line of the child's stdout (or stderr) matching, or rejects on timeout/exit. */
export function waitForLine(
  child: ChildProcess,
  match: RegExp | ((line: string) => boolean),
  opts: { timeoutMs?: number; stream?: 'stdout' | 'stderr' } = {},
): Promise<string> {
  const test = typeof match === 'function' ? match : (line: string) => match.test(line);
  const stream = opts.stream === 'stderr' ? child.stderr : child.stdout;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    if (!stream) {
      reject(new Error(`child has no piped ${opts.stream ?? 'stdout'}`));
      return;
    }
    let buffered = '';
    const onData = (chunk: Buffer | string): void => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      const hit = lines.find(test);
      if (hit !== undefined) finish(() => resolve(hit));
    };
    const onExit = (): void => finish(() => reject(new Error('process exited before the line appeared')));
    const timer = setTimeout(
      () => finish(() => reject(new Error(`no matching line within ${timeoutMs} ms`))),
      timeoutMs,
    );
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      child.off('exit', onExit);
      settle();
    };
    stream.on('data', onData);
    child.once('exit', onExit);
  });
}

// ---------------------------------------------------------------------------------------------
// Link faults, applied at the bridge so the host's own configuration stays as a test left it

class HostLink {
  private cutState = false;
  private mcastBlocked = false;
  private rateLimited = false;
  private shaped = false;

  constructor(
    private readonly bridgeNs: string,
    private readonly port: string,
    private readonly hostNs: string,
    private readonly hasIpv4: boolean,
  ) {}

  async cut(): Promise<void> {
    if (this.cutState) return;
    this.cutState = true;
    // The host side loses carrier too: its sends are dropped without an error, like a pulled cable.
    await ip(['-n', this.bridgeNs, 'link', 'set', this.port, 'down']);
  }

  async restore(): Promise<void> {
    if (!this.cutState) return;
    await ip(['-n', this.bridgeNs, 'link', 'set', this.port, 'up']);
    await waitLinkUp(this.bridgeNs, this.port, this.hostNs);
    this.cutState = false;
  }

  async blockMulticast(): Promise<void> {
    if (this.mcastBlocked) return;
    this.mcastBlocked = true;
    const tc = (args: readonly string[]): Promise<string> => inNs(this.bridgeNs, 'tc', args);
    await tc(['qdisc', 'add', 'dev', this.port, 'clsact']);
    // ingress = frames from the host, egress = frames to it. Only UDP is dropped, so ARP/ND/IGMP/MLD keep
    // working and unicast is untouched.
    for (const direction of ['ingress', 'egress']) {
      for (const rule of MULTICAST_UDP_MATCHES) {
        await tc(['filter', 'add', 'dev', this.port, direction, ...rule, 'action', 'mirred', 'egress', 'redirect', 'dev', SINK_IFNAME]);
      }
    }
    if (this.hasIpv4) await ip(['-n', this.hostNs, 'route', 'del', '224.0.0.0/4', 'dev', HOST_IFNAME]);
  }

  async unblockMulticast(): Promise<void> {
    if (!this.mcastBlocked) return;
    await inNs(this.bridgeNs, 'tc', ['qdisc', 'del', 'dev', this.port, 'clsact']);
    if (this.hasIpv4) await addMulticastRoute(this.hostNs);
    this.mcastBlocked = false;
  }

  async limitRate(mbit: number): Promise<void> {
    if (!(mbit > 0) || !Number.isFinite(mbit)) throw new RangeError(`rate must be a positive number of Mbit/s, got ${mbit}`);
    const tc = (args: readonly string[]): Promise<string> => inNs(this.bridgeNs, 'tc', args);
    // The port's egress is the direction towards the host; the root qdisc is apart from blockMulticast's clsact.
    await tc(['qdisc', 'replace', 'dev', this.port, 'root', 'handle', '1:', 'htb', 'default', '1']);
    await tc(['class', 'replace', 'dev', this.port, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', `${mbit}mbit`]);
    this.rateLimited = true;
  }

  async unlimitRate(): Promise<void> {
    if (!this.rateLimited) return;
    await inNs(this.bridgeNs, 'tc', ['qdisc', 'del', 'dev', this.port, 'root']);
    if (this.shaped) await inNs(this.hostNs, 'tc', ['qdisc', 'del', 'dev', HOST_IFNAME, 'root']);
    this.rateLimited = false;
    this.shaped = false;
  }

  async shape(mbit: number): Promise<void> {
    if (!(mbit > 0) || !Number.isFinite(mbit)) throw new RangeError(`rate must be a positive number of Mbit/s, got ${mbit}`);
    // veths hand tbf whole GSO segments (up to 64 KiB): the bucket must hold a few of them or the
    // link runs far below its rate; the queue holds SHAPE_LATENCY of traffic, like a switch's buffer.
    const tbf = ['tbf', 'rate', `${mbit}mbit`, 'burst', SHAPE_BURST, 'latency', SHAPE_LATENCY];
    await inNs(this.bridgeNs, 'tc', ['qdisc', 'replace', 'dev', this.port, 'root', ...tbf]);
    await inNs(this.hostNs, 'tc', ['qdisc', 'replace', 'dev', HOST_IFNAME, 'root', ...tbf]);
    this.rateLimited = true;
    this.shaped = true;
  }
}

/** tbf bucket and queue for shapeLink (see there). */
const SHAPE_BURST = '256kb';
const SHAPE_LATENCY = '20ms';

const MULTICAST_UDP_MATCHES: readonly (readonly string[])[] = [
  ['pref', '10', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '224.0.0.0/4', 'match', 'ip', 'protocol', '17', '0xff'],
  ['pref', '11', 'protocol', 'ipv6', 'u32', 'match', 'ip6', 'dst', 'ff00::/8', 'match', 'ip6', 'protocol', '17', '0xff'],
];

/** Polls (bounded) until the bridge port forwards and the host's interface is operationally up. */
async function waitLinkUp(bridgeNs: string, port: string, hostNs: string): Promise<void> {
  const deadline = Date.now() + LINK_WAIT_MS;
  for (;;) {
    const [portState, hostState] = await Promise.all([
      ip(['-n', bridgeNs, '-j', 'link', 'show', 'dev', port]),
      ip(['-n', hostNs, '-j', 'link', 'show', 'dev', HOST_IFNAME]),
    ]);
    if (operstate(portState) === 'UP' && operstate(hostState) === 'UP') return;
    if (Date.now() > deadline) throw new Error(`link ${port} <-> ${hostNs} not up within ${LINK_WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, LINK_POLL_MS));
  }
}

function operstate(json: string): string | undefined {
  const parsed = JSON.parse(json) as Array<{ operstate?: string }>;
  return parsed[0]?.operstate;
}
