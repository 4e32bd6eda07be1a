import { networkInterfaces } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';
import { ErrorCode, GroupcastError } from '../errors.js';

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
  const all = Object.entries(networkInterfaces()).flatMap(([name, infos]) =>
    (infos ?? []).filter((info) => info.family === family).map((info) => ({ name, info })),
  );
  const wanted = spec?.replace(/%.*$/, '');
  const match = wanted
    ? all.find(({ name, info }) => info.address === wanted || name === wanted)
    : (all.find(({ info }) => !info.internal) ?? all.find(({ info }) => info.internal));
  if (!match) {
    const what = spec ? `interface ${spec}` : 'any interface';
    throw new GroupcastError(ErrorCode.CONFIG, `no ${family} address on ${what}`);
  }
  const { name, info } = match;
  if (family === 'IPv4') return { family, address: info.address, socketInterface: info.address, name };
  const scoped = info.address.startsWith('fe80') ? `${info.address}%${name}` : info.address;
  return { family, address: scoped, socketInterface: `::%${name}`, name };
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
