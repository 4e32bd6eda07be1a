import { networkInterfaces } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';

export type Family = 'IPv4' | 'IPv6';

export function familyOf(groupAddress: string): Family {
  if (isIPv4(groupAddress)) return 'IPv4';
  if (isIPv6(groupAddress)) return 'IPv6';
  throw new GroupcastError(ErrorCode.CONFIG, `group address ${groupAddress} is not an IP address`);
}

/** The interface as the socket calls want it: an IPv4 address, or `::%<ifname>` for IPv6. */
export interface MulticastInterface {
  family: Family;
  /** The interface's own address (for IPv6 scoped with %ifname when link-local). */
  address: string;
  /** What setMulticastInterface and addMembership take. */
  socketInterface: string;
  name: string;
}

/**
 * Resolves `--interface` (an address or an interface name) for the group's family. With no value,
 * picks the first non-loopback interface of that family, then loopback: an explicit choice made
 * here, logged by the daemon, never left to the routing table.
 */
export function resolveInterface(spec: string | undefined, family: Family): MulticastInterface {
  const all = Object.entries(networkInterfaces())
    .flatMap(([name, infos]) => (infos ?? []).filter((info) => info.family === family).map((info) => ({ name, info })))
    // An IPv6 interface has a link-local address and often a ULA or global one too. Members dial the
    // address the server's datagrams come from, and for the site-scoped group (and replies to members'
    // own ULAs) the kernel sends from the wider-scoped address: so that is the one to prefer.
    .sort((a, b) => Number(isLinkLocal(a.info.address)) - Number(isLinkLocal(b.info.address)));
  const wanted = spec === undefined ? undefined : canonicalAddress(spec.replace(/%.*$/, ''));
  const match = wanted
    ? all.find(({ name, info }) => canonicalAddress(info.address) === wanted || name === wanted)
    : (all.find(({ info }) => !info.internal) ?? all.find(({ info }) => info.internal));
  if (!match) {
    const what = spec ? `interface ${spec}` : 'any interface';
    throw new GroupcastError(ErrorCode.CONFIG, `no ${family} address on ${what}`);
  }
  const { name, info } = match;
  if (family === 'IPv4') return { family, address: info.address, socketInterface: info.address, name };
  const scoped = isLinkLocal(info.address) ? `${info.address}%${name}` : info.address;
  return { family, address: scoped, socketInterface: `::%${name}`, name };
}

/** fe80::/10: meaningful only together with an interface (`fe80::1%eth0`). */
export function isLinkLocal(address: string): boolean {
  return isIPv6(address.replace(/%.*$/, '')) && /^fe[89ab]/i.test(address);
}

/** One spelling per IPv6 address (`fd77::1:0:0:0:1` and `fd77:0:0:1::1` are the same), so typed addresses compare equal. */
function canonicalAddress(address: string): string {
  return isIPv6(address) ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}

/** Parses `HOST[:PORT]` or `[V6]:PORT`. */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const plain = /^([^:]+)(?::(\d+))?$/.exec(text);
  const match = bracketed ?? plain;
  const host = match?.[1] ?? (isIPv6(text) ? text : undefined);
  const port = match?.[2] ? Number(match[2]) : defaultPort;
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new GroupcastError(ErrorCode.USAGE, `not a HOST[:PORT]: ${text}`);
  }
  return { host, port };
}

/**
 * A failed bind as an operator reads it: "TCP port 47701 on 127.0.0.1 is already in use (another
 * group-server?)" instead of a raw `listen EADDRINUSE`. `what` names the listener ("TCP", "UDP", "HTTP").
 */
export function listenFailure(err: unknown, what: string, host: string, port: number, hint: string): GroupcastError {
  const code = errnoCode(err);
  const where = `${what} port ${port} on ${host}`;
  if (code === 'EADDRINUSE') return new GroupcastError(ErrorCode.PORT_IN_USE, `${where} is already in use (${hint})`, { cause: err });
  if (code === 'EACCES') return new GroupcastError(ErrorCode.PORT_IN_USE, `${where} is not allowed for this user (ports below 1024 need privileges)`, { cause: err });
  if (code === 'EADDRNOTAVAIL') return new GroupcastError(ErrorCode.PORT_IN_USE, `${host} is not an address of this machine, so ${what} port ${port} cannot be bound there`, { cause: err });
  return new GroupcastError(ErrorCode.PORT_IN_USE, `cannot listen on ${where}: ${(err as Error).message}`, { cause: err });
}
