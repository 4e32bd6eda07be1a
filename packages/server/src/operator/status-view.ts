import { formatBytes, formatDuration, formatTable, printable, shortId } from '@groupcast/shared';
import type { InviteView } from '../control/invites.js';
import type { DeliveryView, GroupView, MemberView, StatusView } from './operations.js';

/** How many transfers `status` lists; --json has them all. */
export const RECENT_TRANSFERS = 10;

/** "online 3m07s", "offline, seen 2h05m ago", "never connected". */
export function presence(member: Pick<MemberView, 'online' | 'onlineSince' | 'lastSeen'>, now: number): string {
  if (member.online) return member.onlineSince === null ? 'online' : `online ${formatDuration(now - member.onlineSince)}`;
  return member.lastSeen > 0 ? `offline, seen ${formatDuration(now - member.lastSeen)} ago` : 'never connected';
}

const list = (names: string[]): string => (names.length ? names.join(',') : '-');

export function groupsTable(groups: GroupView[]): string {
  return formatTable(
    ['GROUP', 'ACCESS', 'MEMBERS', 'ONLINE', 'DESCRIPTION'],
    groups.map((g) => [g.name, g.open ? 'open' : 'closed', String(g.members), String(g.online), printable(g.description)]),
  );
}

/** `members`: full ids, since this is where an operator copies one from for allow / revoke. */
export function membersTable(members: MemberView[], now: number): string {
  if (members.length === 0) return 'no members yet: allow an id ("group-server members allow <group> <id>") or invite one ("group-server invite <group>")';
  return formatTable(
    ['MEMBER', 'NAME', 'ADDRESS', 'STATUS', 'JOINED', 'ALLOWED IN', 'PENDING', 'FAILED'],
    members.map((m) => [
      m.id, printable(m.name) || '-', m.address || '-', presence(m, now), list(m.joined), list(m.allowedIn), String(m.pending), String(m.failed),
    ]),
  );
}

function serverLines(server: StatusView['server'], now: number): string[] {
  const dropped = Object.values(server.datagrams.dropped).reduce((sum, n) => sum + n, 0);
  return [
    `group-server ${printable(server.name)}  (pid ${server.pid}, up ${formatDuration(now - server.startedAt)})`,
    `  id         ${server.id}`,
    `  multicast  ${server.groupAddress}:${server.udpPort} on ${server.interface}`,
    `  data       TLS on ${server.interface}:${server.tcpPort}`,
    `  state      ${server.stateDir}`,
    `  config     ${server.configFile ?? '(none: built-in defaults, flags and GROUPCAST_* variables)'}`,
    ...(server.metrics ? [`  metrics    http://${server.metrics}/metrics`, `  web view   http://${server.metrics}/`] : []),
    `  traffic    ${server.datagrams.received} datagrams in, ${server.datagrams.sent} out, ${dropped} dropped; `
      + `${server.connections.admitted} connections admitted, ${server.connections.refused} refused`,
  ];
}

/** Why a delivery is not done: what it waits for and, if an attempt failed, why; or why it failed for good. */
export function why(d: DeliveryView): string {
  const reason = printable(d.reason);
  if (d.state === 'failed' || !reason) return reason || d.waiting;
  return `${d.waiting}; last attempt: ${reason}`;
}

/** What the listed transfers still wait for, or why they failed: one row per member not served. */
function undelivered(transfers: StatusView['transfers']): string[] {
  const rows = transfers.flatMap((t) => t.deliveries.filter((d) => d.state !== 'delivered').map((d) => [
    t.id.slice(0, 12), printable(t.name), shortId(d.member), printable(d.memberName) || '-', d.state, why(d),
  ]));
  return rows.length === 0 ? [] : ['', formatTable(['TRANSFER', 'FILE', 'MEMBER', 'NAME', 'STATE', 'WHY'], rows)];
}

/** `status`: the server, its groups, its members (short ids) and the most recent transfers. */
export function statusText(status: StatusView, now: number): string {
  const members = status.members.length === 0
    ? ['no members yet']
    : [formatTable(
      ['MEMBER', 'NAME', 'ADDRESS', 'STATUS', 'JOINED', 'PENDING', 'FAILED', 'FROM SERVER', 'FROM PEERS'],
      status.members.map((m) => [
        shortId(m.id), printable(m.name) || '-', m.address || '-', presence(m, now), list(m.joined), String(m.pending), String(m.failed),
        formatBytes(m.bytesFromServer), formatBytes(m.bytesFromPeers),
      ]),
    )];
  const recent = [...status.transfers].sort((a, b) => b.createdAt - a.createdAt).slice(0, RECENT_TRANSFERS);
  const transfers = recent.length === 0
    ? ['no transfers yet: group-server distribute <group> <file>']
    : [
      formatTable(
        ['TRANSFER', 'FILE', 'GROUP', 'SIZE', 'AGE', 'DELIVERED', 'PENDING', 'FAILED', 'FROM SERVER', 'FROM PEERS'],
        recent.map((t) => {
          const count = (...states: string[]): string => String(t.deliveries.filter((d) => states.includes(d.state)).length);
          const sum = (field: 'bytesSent' | 'bytesFromPeers'): string => formatBytes(t.deliveries.reduce((total, d) => total + d[field], 0));
          return [
            t.id.slice(0, 12), printable(t.name), t.to ? `${t.group} (to ${t.to.length})` : t.group, formatBytes(t.size), formatDuration(now - t.createdAt),
            count('delivered'), count('pending', 'sending'), count('failed'), sum('bytesSent'), sum('bytesFromPeers'),
          ];
        }),
      ),
      ...(status.transfers.length > recent.length ? [`(the ${recent.length} most recent of ${status.transfers.length}; --json lists all)`] : []),
    ];
  return [...serverLines(status.server, now), '', groupsTable(status.groups), '', ...members, '', ...transfers, ...undelivered(recent)].join('\n');
}

/** `invites`: what each remembered invite is, never its code. Times as ISO in UTC, like `invite` prints them. */
export function invitesTable(invites: InviteView[], now: number): string {
  if (invites.length === 0) return 'no invites: make one with "group-server invite <group>"';
  const until = (at: number): string => (at > now ? `in ${formatDuration(at - now)}` : `${formatDuration(now - at)} ago`);
  return formatTable(
    ['INVITE', 'GROUP', 'STATE', 'USES LEFT', 'EXPIRES', 'CREATED'],
    invites.map((i) => [
      i.invite, i.group, i.state, `${i.usesLeft} of ${i.uses}`, `${new Date(i.expiresAt).toISOString()} (${until(i.expiresAt)})`, new Date(i.createdAt).toISOString(),
    ]),
  );
}
