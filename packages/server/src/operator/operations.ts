import { isAbsolute } from 'node:path';
import { checkRate, ErrorCode, formatDuration, GroupcastError, parsePeerId, printable, type GroupInfo, type PeerId } from '@groupcast/shared';
import type { Handler } from './control-socket.js';
import type { DataPlane } from '../delivery/data-plane.js';
import type { DeliverySources, Distributor } from '../delivery/distributor.js';
import { DEFAULT_INVITE_TTL_MS, type Invites, type InviteView } from '../control/invites.js';
import type { Membership } from '../control/membership.js';
import type { DeliveryRecord, Outbox, TransferRecord } from '../delivery/outbox.js';

/** How people see a transfer's name: a tree as `name/ (N files)`. */
export function transferLabel(transfer: { name: string; kind?: 'tree'; files?: number }): string {
  return transfer.kind === 'tree' ? `${transfer.name}/ (${transfer.files ?? 0} files)` : transfer.name;
}

/** What the operator's commands see of a delivery. */
export interface DeliveryView {
  transfer: string;
  file: string;
  /** A tree: how many files it holds (`file` is its name). */
  files?: number;
  group: string;
  size: number;
  member: PeerId;
  memberName: string;
  online: boolean;
  state: DeliveryRecord['state'];
  /** For a delivery not done yet, what it waits for: "member offline", "retry in 4.0s", "queued" or "sending". */
  waiting: string;
  /** When a backed-off delivery is next tried (ms since the epoch), or 0. */
  nextAttemptAt: number;
  attempts: number;
  /** Bytes of the file the server sent the member, over all attempts. */
  bytesSent: number;
  /** Bytes of the file the member took from its peers, over all attempts. */
  bytesFromPeers: number;
  /** Why the last attempt did not deliver, or why the delivery failed for good. */
  reason: string;
  updatedAt: number;
}

function waitingFor(delivery: DeliveryRecord, online: boolean, now: number): string {
  if (delivery.state === 'sending') return 'sending';
  if (delivery.state !== 'pending') return '';
  if (!online) return 'member offline';
  if (delivery.notBefore > now) return `retry in ${formatDuration(delivery.notBefore - now)}`;
  return 'queued';
}

export interface DistributeResult {
  transfers: TransferRecord[];
  deliveries: DeliveryView[];
  timedOut: boolean;
}

export type DistributeEvent =
  | { kind: 'start'; transfers: TransferRecord[]; members: Array<{ id: PeerId; name: string; online: boolean }> }
  /** `watch`: attached again to these transfers; a `delivery` event for each of their deliveries follows. */
  | { kind: 'watching'; transfers: TransferRecord[]; members: Array<{ id: PeerId; name: string; online: boolean }> }
  /** `position`: what the member holds by now, from anyone; fromServer + fromPeers: where it came from. */
  | { kind: 'progress'; transfer: string; member: PeerId; position: number; size: number; fromServer: number; fromPeers: number }
  | { kind: 'delivery'; delivery: DeliveryView }
  /** The store copying and hashing a file (`file`: the path given), before its transfer is recorded. */
  | { kind: 'storing'; file: string; position: number; size: number };

/** What `status` shows of the server itself. Times are milliseconds since the epoch. */
export interface ServerDescription {
  id: PeerId;
  name: string;
  pid: number;
  startedAt: number;
  interface: string;
  groupAddress: string;
  udpPort: number;
  tcpPort: number;
  stateDir: string;
  configFile: string | null;
  metrics: string | null;
  datagrams: { received: number; sent: number; dropped: Record<string, number> };
  connections: { admitted: number; refused: number };
  control: Record<string, number>;
  /** Join codes created, redeemed, refused (wrong, expired or used) and rate-limited. */
  invites: Record<string, number>;
  /** members.json writes, open-group joins refused at the cap, idle open-group members expired. */
  membership: Record<string, number>;
}

export interface GroupView extends GroupInfo {
  /** Members that joined and may receive. */
  members: number;
  online: number;
}

/** A member as `members` and `status` show it; `onlineSince` is null while offline. */
export type MemberView = ReturnType<Membership['listMembers']>[number] & {
  /** Deliveries to it not done yet (pending or sending). */
  pending: number;
  failed: number;
  /** Bytes the server sent it and bytes it took from peers, over its deliveries the outbox still holds. */
  bytesFromServer: number;
  bytesFromPeers: number;
};

export interface StatusView {
  server: ServerDescription;
  groups: GroupView[];
  members: MemberView[];
  transfers: Array<TransferRecord & { deliveries: DeliveryView[] }>;
}

interface Context {
  membership: Membership;
  distributor: Distributor;
  outbox: Outbox;
  dataPlane: DataPlane;
  invites: Invites;
  describe: () => ServerDescription;
}

const PROGRESS_INTERVAL_MS = 250;
/**
 * A member whose link just dropped usually redials within a second: `distribute` gives it this long
 * before counting its delivery as pending for an absent member.
 */
const RECONNECT_GRACE_MS = 5_000;
const REVOKE_GRACE_MS = 5_000;
/** How long `cancel` waits for the deliveries it stopped mid-stream to end before it answers. */
const CANCEL_GRACE_MS = 10_000;

/** The shortest id prefix `members allow|revoke` accept: the 7 characters every table shows (shortId). */
export const MIN_ID_PREFIX = 7;

/**
 * A member id as the operator typed it: a full id, or a unique prefix of at least MIN_ID_PREFIX
 * characters of a member the server knows (case and dashes do not matter). An ambiguous prefix is
 * refused with the candidates, so a revoke never hits the wrong member.
 */
export function resolveMemberId(text: string, known: readonly PeerId[]): PeerId {
  const compact = text.toUpperCase().replace(/[-\s]/g, '');
  if (compact.length >= 56) return parsePeerId(text);
  if (compact.length < MIN_ID_PREFIX) {
    throw new GroupcastError(ErrorCode.BAD_ID, `"${text.slice(0, 80)}" is too short: give the full id or at least its first ${MIN_ID_PREFIX} characters`);
  }
  const matches = known.filter((id) => id.replace(/-/g, '').startsWith(compact));
  if (matches.length === 1 && matches[0]) return matches[0];
  if (matches.length === 0) {
    throw new GroupcastError(ErrorCode.BAD_ID, `no known member has an id starting with "${text.slice(0, 80)}" (group-server members lists them; a new member needs its full id)`);
  }
  throw new GroupcastError(ErrorCode.BAD_ID, `"${text.slice(0, 80)}" matches ${matches.length} members (${matches.slice(0, 5).map(shortIdOf).join(', ')}${matches.length > 5 ? ', …' : ''}): give more characters of the id`);
}

const shortIdOf = (id: PeerId): string => id.slice(0, 15);

/** Names `distribute --to` takes at most: a bound on the request, far above any group this server serves at once. */
export const MAX_RECIPIENTS = 10_000;

/**
 * `distribute --to`: each name a member of the group, by its name as status shows it (unique in the
 * group) or by its id as resolveMemberId takes it. Anything else is refused (BAD_ID, a usage error)
 * before anything is stored.
 */
export function resolveRecipients(
  given: unknown, group: string, targets: readonly PeerId[], known: readonly PeerId[], nameOf: (id: PeerId) => string,
): PeerId[] {
  if (!Array.isArray(given) || given.length === 0 || given.length > MAX_RECIPIENTS || !given.every((t): t is string => typeof t === 'string' && t.length > 0)) {
    throw new GroupcastError(ErrorCode.USAGE, `--to needs 1 to ${MAX_RECIPIENTS} member names or ids`);
  }
  const resolveOne = (text: string): PeerId => {
    const named = targets.filter((id) => nameOf(id) === text);
    if (named.length === 1 && named[0]) return named[0];
    if (named.length > 1) throw new GroupcastError(ErrorCode.BAD_ID, `${named.length} members of ${group} are named "${printable(text.slice(0, 80))}": give the id instead`);
    let id: PeerId;
    try {
      id = resolveMemberId(text, known);
    } catch (err) {
      throw new GroupcastError(ErrorCode.BAD_ID, `no member of ${group} is named "${printable(text.slice(0, 80))}", and it is not a member id: ${(err as Error).message}`, { cause: err });
    }
    if (!targets.includes(id)) throw new GroupcastError(ErrorCode.BAD_ID, `${shortIdOf(id)} is not a member of ${group} (group-server members shows who joined which group)`);
    return id;
  };
  return [...new Set(given.map(resolveOne))];
}

/** The shortest transfer-id prefix `cancel` and `retry` accept (status shows 12 characters). */
export const MIN_TRANSFER_PREFIX = 6;

/**
 * A transfer id as the operator typed it: the full id or a unique prefix of at least
 * MIN_TRANSFER_PREFIX hex characters of a transfer the server still lists.
 */
export function resolveTransferId(text: string, known: readonly string[]): string {
  const prefix = text.trim().toLowerCase();
  if (!/^[0-9a-f]+$/.test(prefix) || prefix.length < MIN_TRANSFER_PREFIX) {
    throw new GroupcastError(ErrorCode.USAGE, `"${text.slice(0, 80)}" is not a transfer id: give the id status shows, or at least its first ${MIN_TRANSFER_PREFIX} hex characters`);
  }
  const matches = known.filter((id) => id.startsWith(prefix));
  if (matches.length === 1 && matches[0]) return matches[0];
  if (matches.length === 0) {
    throw new GroupcastError(ErrorCode.NOT_FOUND, `no transfer has an id starting with "${prefix}" (group-server status lists them; old finished ones are forgotten)`);
  }
  throw new GroupcastError(ErrorCode.USAGE, `"${prefix}" matches ${matches.length} transfers (${matches.slice(0, 5).map((id) => id.slice(0, 12)).join(', ')}${matches.length > 5 ? ', …' : ''}): give more characters of the id`);
}

/**
 * A member's failed deliveries that still matter: one is resolved once the member received the same
 * file name in the same group later (a re-send), so `members` stops counting it.
 */
function unresolvedFailures(deliveries: readonly DeliveryRecord[], transferOf: (id: string) => TransferRecord | undefined): number {
  const nameOf = (t: TransferRecord): string => `${t.group}/${t.name}`;
  const received = new Map<string, number>();
  for (const d of deliveries) {
    const t = transferOf(d.transfer);
    if (t && d.state === 'delivered') received.set(nameOf(t), Math.max(received.get(nameOf(t)) ?? -Infinity, t.createdAt));
  }
  return deliveries.filter((d) => {
    const t = transferOf(d.transfer);
    return d.state === 'failed' && !(t && (received.get(nameOf(t)) ?? -Infinity) >= t.createdAt);
  }).length;
}

/** What `cancel` and `retry` answer: the transfer and the deliveries they changed. */
export interface DeliveryChange {
  transfer: TransferRecord;
  changed: DeliveryView[];
  /** Deliveries asked for that were left as they were, with why. */
  unchanged: Array<DeliveryView & { why: string }>;
}

/** What `prune` answers: the store files removed and the bytes given back. */
export interface PruneResult {
  files: number;
  bytes: number;
  removed: Array<{ name: string; bytes: number }>;
}

interface WaitOptions {
  waitAll: boolean;
  timeoutMs: number | undefined;
}

function waitOptions(params: Record<string, unknown>): WaitOptions {
  const timeoutMs = typeof params.timeoutMs === 'number' && params.timeoutMs > 0 ? params.timeoutMs : undefined;
  return { waitAll: params.waitAll === true, timeoutMs };
}

function str(params: Record<string, unknown>, name: string): string {
  const value = params[name];
  if (typeof value !== 'string' || !value) throw new GroupcastError(ErrorCode.USAGE, `missing ${name}`);
  return value;
}

/** The `status` answer as a function, for the web view: the same view the CLI gets. */
export function statusOf(handlers: Record<string, Handler>): () => Promise<StatusView> {
  const never = new AbortController().signal;
  return async () => (await handlers.status?.({}, () => undefined, never)) as StatusView;
}

/** The daemon's answers to the operator's commands, served over the control socket. */
export function operations(ctx: Context): Record<string, Handler> {
  const { membership, distributor, outbox, dataPlane } = ctx;

  /** Resolves once none of these deliveries is being sent, or after `timeoutMs`. */
  const untilNotSending = (deliveries: () => readonly DeliveryRecord[], timeoutMs: number): Promise<void> => new Promise((resolve) => {
    const busy = (): boolean => deliveries().some((d) => d.state === 'sending');
    const done = (): void => {
      clearTimeout(timer);
      distributor.off('delivery', check);
      resolve();
    };
    const check = (): void => {
      if (!busy()) done();
    };
    const timer = setTimeout(done, timeoutMs);
    distributor.on('delivery', check);
    check();
  });
  const nothingInFlight = (member: PeerId, timeoutMs: number): Promise<void> => untilNotSending(() => outbox.deliveriesFor(member), timeoutMs);

  const view = (delivery: DeliveryRecord): DeliveryView => {
    const transfer = outbox.transfer(delivery.transfer);
    const online = membership.isOnline(delivery.member);
    const now = Date.now();
    return {
      transfer: delivery.transfer,
      file: transfer?.name ?? '',
      ...(transfer?.kind === 'tree' ? { files: transfer.files ?? 0 } : {}),
      group: transfer?.group ?? '',
      size: transfer?.size ?? 0,
      member: delivery.member,
      memberName: membership.member(delivery.member)?.name ?? '',
      online,
      state: delivery.state,
      waiting: waitingFor(delivery, online, now),
      nextAttemptAt: delivery.state === 'pending' && delivery.notBefore > now ? delivery.notBefore : 0,
      attempts: delivery.attempts,
      bytesSent: delivery.bytesSent,
      bytesFromPeers: delivery.bytesFromPeers,
      reason: delivery.reason,
      updatedAt: delivery.updatedAt,
    };
  };

  const knownIds = (): PeerId[] => membership.listMembers().map((m) => m.id);

  const membersOf = (transfers: readonly TransferRecord[]): Array<{ id: PeerId; name: string; online: boolean }> => (
    [...new Set(transfers.flatMap((t) => outbox.deliveriesOf(t.id)).map((d) => d.member))].map((id) => ({
      id, name: membership.member(id)?.name ?? '', online: membership.isOnline(id),
    }))
  );

  const distribute: Handler = async (params, emit, signal) => {
    const group = str(params, 'group');
    const files = params.files;
    if (!Array.isArray(files) || files.length === 0 || !files.every((f): f is string => typeof f === 'string' && isAbsolute(f))) {
      throw new GroupcastError(ErrorCode.USAGE, 'files must be a non-empty list of absolute paths');
    }
    const rate = params.rate === undefined ? undefined : checkRate(params.rate);
    // An unknown group is the distributor's to refuse (UNKNOWN_GROUP), before any name is looked up in it.
    const to = params.to === undefined || !membership.hasGroup(group) ? undefined
      : resolveRecipients(params.to, group, membership.targets(group), knownIds(), (id) => printable(membership.member(id)?.name ?? ''));
    const lastStoring = new Map<string, number>();
    const onStoring = (file: string, position: number, size: number): void => {
      const now = Date.now();
      if (position < size && now - (lastStoring.get(file) ?? 0) < PROGRESS_INTERVAL_MS) return;
      lastStoring.set(file, now);
      emit({ kind: 'storing', file, position, size } satisfies DistributeEvent);
    };
    const { transfers } = await distributor.distribute(group, files, { rate, to, onStoring });
    emit({ kind: 'start', transfers, members: membersOf(transfers) } satisfies DistributeEvent);
    return follow(transfers, waitOptions(params), emit, signal);
  };

  /**
   * `distribute` attaching again to transfers it started, after it lost the daemon (a restart): the
   * deliveries as they are now, then the same watch as before.
   */
  const watch: Handler = async (params, emit, signal) => {
    const ids = params.transfers;
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id): id is string => typeof id === 'string')) {
      throw new GroupcastError(ErrorCode.USAGE, 'transfers must be a non-empty list of transfer ids');
    }
    const transfers = ids.map((id) => {
      const transfer = outbox.transfer(id);
      if (!transfer) throw new GroupcastError(ErrorCode.NOT_FOUND, `transfer ${id.slice(0, 12)} is not known to this server (status lists what it holds)`);
      return transfer;
    });
    emit({ kind: 'watching', transfers, members: membersOf(transfers) } satisfies DistributeEvent);
    for (const t of transfers) for (const d of outbox.deliveriesOf(t.id)) emit({ kind: 'delivery', delivery: view(d) } satisfies DistributeEvent);
    return follow(transfers, waitOptions(params), emit, signal);
  };

  /**
   * Waits for the deliveries of these transfers, sending the operator each change and progress, until
   * each one ended or waits on a member that is away (all of them with `waitAll`), or `timeoutMs`.
   */
  const follow = (
    transfers: TransferRecord[], { waitAll, timeoutMs }: WaitOptions, emit: (event: DistributeEvent) => void, signal: AbortSignal,
  ): Promise<DistributeResult> => {
    const sizes = new Map(transfers.map((t) => [t.id, t.size]));
    const deliveries = (): DeliveryRecord[] => transfers.flatMap((t) => outbox.deliveriesOf(t.id));
    return new Promise<DistributeResult>((resolve) => {
      const lastProgress = new Map<string, number>();
      let timer: NodeJS.Timeout | undefined;
      let recheck: NodeJS.Timeout | undefined;
      /** When the command stops waiting for a delivery: 0 now (done), a time (absent member), or never. */
      const settlesAt = (d: DeliveryRecord): number => {
        if (d.state === 'delivered' || d.state === 'failed') return 0;
        if (waitAll || d.state !== 'pending' || dataPlane.session(d.member)) return Infinity;
        // A server that just started gives the members it had before the same grace to redial.
        return Math.max(membership.member(d.member)?.lastSeen ?? 0, ctx.describe().startedAt) + RECONNECT_GRACE_MS;
      };
      const finish = (timedOut: boolean): void => {
        distributor.off('delivery', onDelivery);
        distributor.off('progress', onProgress);
        membership.off('presence', check);
        clearTimeout(timer);
        clearTimeout(recheck);
        signal.removeEventListener('abort', onAbort);
        resolve({ transfers, deliveries: deliveries().map(view), timedOut });
      };
      // Deliveries the wait may still hang on, oldest first; see check().
      const open = new Set(deliveries().filter((d) => settlesAt(d) !== 0));
      const check = (): void => {
        // Fast path, run on every delivery event: while any delivery still waits on a connected member
        // the answer is "not yet". Settled ones leave the set as they are met, so a thousand-file
        // distribution costs a few steps per event instead of a pass over every delivery.
        for (const d of open) {
          const at = settlesAt(d);
          if (at === 0) open.delete(d);
          else if (at === Infinity) {
            clearTimeout(recheck);
            return;
          }
        }
        const last = Math.max(0, ...deliveries().map(settlesAt));
        const now = Date.now();
        clearTimeout(recheck);
        if (last <= now) finish(false);
        else if (last !== Infinity) recheck = setTimeout(check, last - now);
      };
      const onDelivery = (delivery: DeliveryRecord): void => {
        if (!sizes.has(delivery.transfer)) return;
        emit({ kind: 'delivery', delivery: view(delivery) } satisfies DistributeEvent);
        check();
      };
      // Runs for every DATA frame sent: sizes are at hand, and an event goes out at most every PROGRESS_INTERVAL_MS.
      const onProgress = (transfer: string, member: PeerId, position: number, sources: DeliverySources): void => {
        const size = sizes.get(transfer);
        if (size === undefined) return;
        const k = `${transfer}/${member}`;
        const now = Date.now();
        if (position < size && now - (lastProgress.get(k) ?? 0) < PROGRESS_INTERVAL_MS) return;
        lastProgress.set(k, now);
        emit({ kind: 'progress', transfer, member, position, size, ...sources } satisfies DistributeEvent);
      };
      const onAbort = (): void => finish(false);
      distributor.on('delivery', onDelivery);
      distributor.on('progress', onProgress);
      // A member queued behind others that goes away changes no delivery, but ends the wait for it.
      membership.on('presence', check);
      signal.addEventListener('abort', onAbort);
      if (timeoutMs) timer = setTimeout(() => finish(true), timeoutMs);
      check();
    });
  };

  const groupViews = (): GroupView[] => membership.groupInfo().map((g) => {
    const targets = membership.targets(g.name);
    return { ...g, members: targets.length, online: targets.filter((id) => membership.isOnline(id)).length };
  });

  const memberViews = (): MemberView[] => membership.listMembers().map((member) => {
    const deliveries = outbox.deliveriesFor(member.id);
    const count = (...states: DeliveryRecord['state'][]): number => deliveries.filter((d) => states.includes(d.state)).length;
    const sum = (field: 'bytesSent' | 'bytesFromPeers'): number => deliveries.reduce((total, d) => total + d[field], 0);
    return {
      ...member, pending: count('pending', 'sending'), failed: unresolvedFailures(deliveries, (id) => outbox.transfer(id)),
      bytesFromServer: sum('bytesSent'), bytesFromPeers: sum('bytesFromPeers'),
    };
  });

  /** The transfer named by `params.transfer`, and its deliveries, all or the one to `params.member`. */
  const chosen = (params: Record<string, unknown>): { transfer: TransferRecord; deliveries: readonly DeliveryRecord[] } => {
    const transfer = outbox.transfer(resolveTransferId(str(params, 'transfer'), outbox.listTransfers().map((t) => t.id)));
    if (!transfer) throw new GroupcastError(ErrorCode.NOT_FOUND, 'that transfer was just forgotten');
    const all = outbox.deliveriesOf(transfer.id);
    if (params.member === undefined) return { transfer, deliveries: all };
    const member = resolveMemberId(str(params, 'member'), knownIds());
    const deliveries = all.filter((d) => d.member === member);
    if (deliveries.length === 0) {
      throw new GroupcastError(ErrorCode.NOT_FOUND, `transfer ${transfer.id.slice(0, 12)} (${transfer.name}) has no delivery to ${shortIdOf(member)}`);
    }
    return { transfer, deliveries };
  };

  const change = (transfer: TransferRecord, asked: readonly DeliveryRecord[], changed: readonly DeliveryRecord[], why: (d: DeliveryRecord) => string): DeliveryChange => ({
    transfer,
    changed: changed.map(view),
    unchanged: asked.filter((d) => !changed.includes(d)).map((d) => ({ ...view(d), why: why(d) })),
  });

  return {
    distribute,
    watch,
    status: async (): Promise<StatusView> => ({
      server: ctx.describe(),
      groups: groupViews(),
      members: memberViews(),
      transfers: outbox.listTransfers().map((t) => ({ ...t, deliveries: outbox.deliveriesOf(t.id).map(view) })),
    }),
    groups: async (): Promise<GroupView[]> => groupViews(),
    members: async (): Promise<MemberView[]> => memberViews(),
    invite: async (params) => {
      const uses = params.uses === undefined ? 1 : Number(params.uses);
      const ttlMs = params.ttlMs === undefined ? DEFAULT_INVITE_TTL_MS : Number(params.ttlMs);
      const created = await ctx.invites.create(str(params, 'group'), uses, ttlMs);
      return { ...created, server: ctx.describe().id };
    },
    cancel: async (params): Promise<DeliveryChange> => {
      const { transfer, deliveries } = chosen(params);
      const ended = distributor.cancel(deliveries);
      // Those in flight end when the stream notices the abort: the answer waits for them (bounded).
      await untilNotSending(() => ended, CANCEL_GRACE_MS);
      return change(transfer, deliveries, ended, (d) => `already ${d.state}`);
    },
    retry: async (params): Promise<DeliveryChange> => {
      const { transfer, deliveries } = chosen(params);
      const retried = await distributor.retry(transfer, deliveries);
      return change(transfer, deliveries, retried, (d) => (d.state === 'failed' ? `no longer a member of ${transfer.group}` : `not failed (${d.state})`));
    },
    prune: async (): Promise<PruneResult> => {
      const removed = await distributor.prune();
      return { files: removed.length, bytes: removed.reduce((sum, file) => sum + file.bytes, 0), removed };
    },
    invites: async (): Promise<InviteView[]> => ctx.invites.list(),
    cancelInvite: async (params): Promise<InviteView> => ctx.invites.cancel(str(params, 'invite')),
    allow: async (params) => {
      const id = resolveMemberId(str(params, 'id'), knownIds());
      membership.allow(str(params, 'group'), id);
      await membership.save();
      return { group: params.group, id, allowed: true };
    },
    revoke: async (params) => {
      const id = resolveMemberId(str(params, 'id'), knownIds());
      const group = str(params, 'group');
      membership.revoke(group, id);
      await membership.save();
      if (!membership.isAdmissible(id)) {
        // The revoke aborted what was in flight; let that delivery send its CANCEL before the link is cut.
        await nothingInFlight(id, REVOKE_GRACE_MS);
        dataPlane.session(id)?.close(new GroupcastError(ErrorCode.CLOSED, 'access revoked'));
      }
      return { group, id, revoked: true };
    },
  };
}
