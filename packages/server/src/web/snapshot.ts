import { printable, shortId, type PeerId } from '@groupcast/shared';
import type { StatusView } from '../operator/operations.js';
import { why } from '../operator/status-view.js';

/** Transfers the page shows: the most recent ones, like `status`; the CLI's --json has them all. */
export const WEB_TRANSFERS = 10;
/** Members the page lists; past this it says how many more there are (the page stays usable and each push bounded). */
export const WEB_MEMBERS = 1_000;
/**
 * `--to` recipients a transfer's line names; past this it says how many more (up to MAX_RECIPIENTS can be
 * given, and every one of them has its own delivery row below the line anyway).
 */
export const WEB_RECIPIENTS = 5;

export interface WebDelivery {
  member: PeerId;
  name: string;
  state: string;
  /** Bytes the member holds: live while sending, the whole file once delivered. */
  position: number;
  /** What it waits for, or why it failed. */
  note: string;
}

/** What the page is sent: every text in it is shown with textContent, never parsed as HTML. */
export interface WebSnapshot {
  server: { name: string; id: string; startedAt: number; data: string };
  groups: Array<{ name: string; description: string; open: boolean; members: number; online: number }>;
  members: Array<{ id: PeerId; name: string; address: string; online: boolean; onlineSince: number | null; lastSeen: number; joined: string[]; pending: number; failed: number }>;
  membersTotal: number;
  transfers: Array<{
    id: string; name: string; group: string; size: number; createdAt: number;
    /** A tree: how many files it holds; null for a single file. */
    files: number | null;
    /** `distribute --to`: the first WEB_RECIPIENTS recipients by name (a short id when nameless) and how many there are; null when sent to the whole group. */
    to: { names: string[]; total: number } | null;
    deliveries: WebDelivery[];
  }>;
  transfersTotal: number;
}

/** Positions of deliveries being sent now, from the distributor's progress events. */
export type LivePositions = ReadonlyMap<string, number>;

export const positionKey = (transfer: string, member: PeerId): string => `${transfer}/${member}`;

/** The status view cut to what the page shows, with live positions for deliveries in flight. */
export function webSnapshot(status: StatusView, live: LivePositions): WebSnapshot {
  const { server } = status;
  const recent = [...status.transfers].sort((a, b) => b.createdAt - a.createdAt).slice(0, WEB_TRANSFERS);
  const names = new Map(status.members.map((m) => [m.id, printable(m.name)]));
  const recipient = (id: PeerId): string => names.get(id) || shortId(id);
  return {
    server: { name: printable(server.name), id: server.id, startedAt: server.startedAt, data: `${server.interface}:${server.tcpPort}` },
    groups: status.groups.map((g) => ({ name: g.name, description: printable(g.description), open: g.open, members: g.members, online: g.online })),
    members: status.members.slice(0, WEB_MEMBERS).map((m) => ({
      id: m.id, name: printable(m.name), address: m.address, online: m.online, onlineSince: m.onlineSince, lastSeen: m.lastSeen,
      joined: m.joined, pending: m.pending, failed: m.failed,
    })),
    membersTotal: status.members.length,
    transfers: recent.map((t) => ({
      id: t.id,
      name: printable(t.name),
      group: t.group,
      size: t.size,
      createdAt: t.createdAt,
      files: t.kind === 'tree' ? t.files ?? 0 : null,
      to: t.to ? { names: t.to.slice(0, WEB_RECIPIENTS).map(recipient), total: t.to.length } : null,
      deliveries: t.deliveries.map((d) => ({
        member: d.member,
        name: printable(d.memberName),
        state: d.state,
        position: d.state === 'delivered' ? t.size : d.state === 'sending' ? live.get(positionKey(t.id, d.member)) ?? 0 : 0,
        note: d.state === 'delivered' ? '' : why(d),
      })),
    })),
    transfersTotal: status.transfers.length,
  };
}
