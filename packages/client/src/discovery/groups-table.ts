import { formatTable, printable } from '@groupcast/shared';
import type { GroupListing } from './list-groups.js';

/** `groups` output for people. Everything from the wire goes through printable(): no escape sequences reach the terminal. */
export function formatGroupListing(listing: GroupListing): string {
  const { server, groups } = listing;
  const name = server.name === undefined ? '(name not announced yet)' : printable(server.name);
  const lines = [
    `server  ${name}  ${server.id}  ${server.address}:${server.tcpPort}  ${server.pinned ? 'pinned' : 'NOT PINNED'}`,
    '',
  ];
  if (groups.length === 0) return [...lines, 'no groups'].join('\n');
  const rows = groups.map((group) => [printable(group.name), group.open ? 'open' : 'closed', printable(group.description)]);
  return [...lines, formatTable(['GROUP', 'ACCESS', 'DESCRIPTION'], rows)].join('\n');
}
