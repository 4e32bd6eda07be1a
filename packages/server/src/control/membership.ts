import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import {
  ErrorCode, GroupcastError, NakReason, readJsonState, stateWriteError, writeFileAtomic,
  type GroupInfo, type Logger, type PeerId,
} from '@groupcast/shared';
import type { GroupConfig } from '../config-schema.js';

export type Verdict = { ok: true } | { ok: false; reason: NakReason; message: string };

export interface MemberRecord {
  id: PeerId;
  name: string;
  address: string;
  /** Groups this member asked to join (and has not left); deliveries go to those it is also allowed in. */
  joined: string[];
  firstSeen: number;
  lastSeen: number;
}

interface Persisted {
  version: 1;
  allowed: Record<string, PeerId[]>;
  revoked: Record<string, PeerId[]>;
  members: MemberRecord[];
}

interface Group {
  config: GroupConfig;
  allowed: Set<PeerId>;
  revoked: Set<PeerId>;
  /** In an open group: joined ids that are in only because it is open. What the cap counts. */
  guests: Set<PeerId>;
}

export interface MembershipEvents {
  joined: [id: PeerId, group: string];
  left: [id: PeerId, group: string];
  /** The member lost access to the group (revoked or left): cancel what is queued for it. */
  revoked: [id: PeerId, group: string];
  /** The member's data connection came up or went away. */
  presence: [id: PeerId, online: boolean];
}

/** A change from the network is on disk this soon after the first one of a quiet spell. */
const PERSIST_DELAY_MS = 200;
/**
 * Under a storm of joins, writes start at most this often: the file is at most the open-group caps'
 * worth of records (~250 KB at the default cap), so a flood costs ~125 KB/s of writes, not 5 MB per
 * 200 ms. Lost on a crash is at most this much of joins, which members repeat after the restart.
 */
const PERSIST_MIN_GAP_MS = 2_000;
/**
 * Default cap on the members of one open group that are not explicitly allowed: far more than a LAN
 * team, small enough that a flood of fresh keys costs 1000 records (~250 KB in members.json) and 1000
 * deliveries per distribution, not one per key. Raised with --max-open-members.
 */
export const DEFAULT_MAX_OPEN_MEMBERS = 1_000;
/**
 * Default time after which an open group forgets a member that neither connected nor sent a datagram:
 * a month covers holidays; a key used once (a flood, a reinstalled machine) does not stay for good.
 */
export const DEFAULT_OPEN_MEMBER_EXPIRY_MS = 30 * 24 * 3_600_000;
/** Expiry is checked at a tenth of the expiry time, within these bounds: cheap, and timely enough. */
const EXPIRY_SWEEP_MIN_MS = 1_000;
const EXPIRY_SWEEP_MAX_MS = 3_600_000;

export interface MembershipOptions {
  log: Logger;
  groups: GroupConfig[];
  stateDir: string;
  clock?: () => number;
  /** Members of an open group beyond the explicitly allowed ones; a JOIN past it is NAKed GROUP_FULL. */
  maxOpenMembers?: number;
  /** An open group's member not seen for this long is dropped (configured and allowed ids never are). */
  openMemberExpiryMs?: number;
}

/**
 * Who may be in which group, and who is. Authorization = the group is open, or the id is listed in
 * the config or allowed at run time, and not revoked. Joins and runtime changes persist to
 * members.json (coalesced, so a join storm costs a few writes, not one per join). Open groups are
 * bounded: at most maxOpenMembers guests each, and a guest not seen for openMemberExpiryMs is dropped.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly groups = new Map<string, Group>();
  private readonly members = new Map<PeerId, MemberRecord>();
  /** Members with a data connection now, and since when. */
  private readonly online = new Map<PeerId, number>();
  private readonly path: string;
  private persistTimer: NodeJS.Timeout | undefined;
  private persisting: Promise<void> = Promise.resolve();
  private lastPersistAt = -Infinity;
  /** Why the last write failed, while none has succeeded since: what is in memory is not on disk. */
  private unwritten: GroupcastError | undefined;
  private closed = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  readonly counters = { persisted: 0, full: 0, expired: 0 };

  constructor(private readonly options: MembershipOptions) {
    super();
    this.path = join(options.stateDir, 'members.json');
    for (const config of options.groups) {
      this.groups.set(config.name, { config, allowed: new Set(config.members), revoked: new Set(), guests: new Set() });
    }
  }

  private get maxOpenMembers(): number {
    return this.options.maxOpenMembers ?? DEFAULT_MAX_OPEN_MEMBERS;
  }

  private get expiryMs(): number {
    return this.options.openMemberExpiryMs ?? DEFAULT_OPEN_MEMBER_EXPIRY_MS;
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  async load(): Promise<void> {
    const state = await readJsonState<Persisted>(this.path);
    if (!state) return;
    for (const [name, ids] of Object.entries(state.allowed)) for (const id of ids) this.groups.get(name)?.allowed.add(id);
    for (const [name, ids] of Object.entries(state.revoked)) {
      const group = this.groups.get(name);
      for (const id of ids) {
        group?.allowed.delete(id);
        group?.revoked.add(id);
      }
    }
    for (const record of state.members) {
      this.members.set(record.id, record);
      for (const name of record.joined) this.countGuest(record.id, name);
    }
  }

  /** Applies the open-group bounds to loaded state at once, then forgets idle members periodically. */
  start(): void {
    this.trimToCap();
    this.expireIdle();
    const every = Math.min(EXPIRY_SWEEP_MAX_MS, Math.max(EXPIRY_SWEEP_MIN_MS, this.expiryMs / 10));
    this.expiryTimer = setInterval(() => this.expireIdle(), every);
    this.expiryTimer.unref();
  }

  /** Notes an id joined to a group on openness alone (neither configured nor allowed). */
  private countGuest(id: PeerId, groupName: string): void {
    const group = this.groups.get(groupName);
    if (group?.config.open && !group.allowed.has(id) && !group.revoked.has(id)) group.guests.add(id);
  }

  groupInfo(): GroupInfo[] {
    return [...this.groups.values()].map(({ config }) => ({
      name: config.name,
      description: config.description,
      open: config.open,
    }));
  }

  hasGroup(name: string): boolean {
    return this.groups.has(name);
  }

  isAuthorized(id: PeerId, groupName: string): boolean {
    const group = this.groups.get(groupName);
    if (!group || group.revoked.has(id)) return false;
    return group.config.open || group.allowed.has(id);
  }

  /** May this id hold a data connection at all? */
  isAdmissible(id: PeerId): boolean {
    return [...this.groups.keys()].some((name) => this.isAuthorized(id, name));
  }

  join(id: PeerId, groupName: string, seen: { address: string }): Verdict {
    if (!this.groups.has(groupName)) {
      return { ok: false, reason: NakReason.UNKNOWN_GROUP, message: `no group named "${groupName}"` };
    }
    if (!this.isAuthorized(id, groupName)) {
      return { ok: false, reason: NakReason.NOT_AUTHORIZED, message: `not authorized for "${groupName}"` };
    }
    const already = this.members.get(id)?.joined.includes(groupName) ?? false;
    if (!already && this.isFullFor(id, groupName)) {
      this.counters.full++;
      return { ok: false, reason: NakReason.GROUP_FULL, message: `open group "${groupName}" is full (${this.maxOpenMembers} members)` };
    }
    const record = this.touch(id, seen.address);
    if (!already) {
      record.joined.push(groupName);
      this.countGuest(id, groupName);
      this.options.log.info({ member: id, group: groupName, address: seen.address }, 'member joined');
      this.emit('joined', id, groupName);
    }
    this.schedulePersist();
    return { ok: true };
  }

  /** Would this id take a guest place that the open group no longer has? */
  private isFullFor(id: PeerId, groupName: string): boolean {
    const group = this.groups.get(groupName);
    if (!group?.config.open || group.allowed.has(id)) return false;
    return group.guests.size >= this.maxOpenMembers;
  }

  leave(id: PeerId, groupName: string, seen: { address: string }): Verdict {
    if (!this.groups.has(groupName)) {
      return { ok: false, reason: NakReason.UNKNOWN_GROUP, message: `no group named "${groupName}"` };
    }
    const record = this.members.get(id);
    if (record?.joined.includes(groupName)) {
      this.touch(id, seen.address);
      record.joined = record.joined.filter((name) => name !== groupName);
      this.groups.get(groupName)?.guests.delete(id);
      this.options.log.info({ member: id, group: groupName }, 'member left');
      this.emit('left', id, groupName);
      this.emit('revoked', id, groupName);
      this.schedulePersist();
    }
    return { ok: true };
  }

  allow(groupName: string, id: PeerId): void {
    const group = this.requireGroup(groupName);
    group.revoked.delete(id);
    group.allowed.add(id);
    group.guests.delete(id);
    this.options.log.info({ member: id, group: groupName }, 'member allowed');
    this.schedulePersist();
  }

  revoke(groupName: string, id: PeerId): void {
    const group = this.requireGroup(groupName);
    group.allowed.delete(id);
    group.revoked.add(id);
    group.guests.delete(id);
    this.options.log.info({ member: id, group: groupName }, 'member revoked');
    this.emit('revoked', id, groupName);
    this.schedulePersist();
  }

  private requireGroup(name: string): Group {
    const group = this.groups.get(name);
    if (!group) throw new GroupcastError(ErrorCode.UNKNOWN_GROUP, `no group named "${name}"`);
    return group;
  }

  private touch(id: PeerId, address: string): MemberRecord {
    const now = this.now();
    let record = this.members.get(id);
    if (!record) {
      record = { id, name: '', address, joined: [], firstSeen: now, lastSeen: now };
      this.members.set(id, record);
    }
    record.address = address;
    record.lastSeen = now;
    return record;
  }

  /** Groups the member joined and is still allowed in: what it should receive. */
  joinedGroups(id: PeerId): string[] {
    return (this.members.get(id)?.joined ?? []).filter((name) => this.isAuthorized(id, name));
  }

  /** Every member that should receive what is distributed to the group. */
  targets(groupName: string): PeerId[] {
    return [...this.members.values()]
      .filter((record) => record.joined.includes(groupName) && this.isAuthorized(record.id, groupName))
      .map((record) => record.id);
  }

  /** Has this id a record, or a place given by the operator? Its requests are not rate-limited. */
  isKnown(id: PeerId): boolean {
    return this.members.has(id) || this.isExplicit(id);
  }

  /** Is the id listed in the config or allowed at run time in some group? Such records are bounded by the operator. */
  private isExplicit(id: PeerId): boolean {
    return [...this.groups.values()].some((group) => group.allowed.has(id));
  }

  /**
   * A connection alone records nothing for an id that never joined: an open group admits any key's
   * TLS, and a record per key would let anyone grow members.json (only JOINs, under the cap, do).
   */
  setOnline(id: PeerId, online: boolean, seen?: { name: string; address: string }): void {
    if (online) {
      if (!this.online.has(id)) this.online.set(id, this.now());
      if (this.members.has(id) || this.isExplicit(id)) {
        const record = this.touch(id, seen?.address ?? '');
        if (seen?.name) record.name = seen.name;
      }
    } else {
      this.online.delete(id);
      const record = this.members.get(id);
      if (record) record.lastSeen = this.now();
    }
    this.schedulePersist();
    this.emit('presence', id, online);
  }

  isOnline(id: PeerId): boolean {
    return this.online.has(id);
  }

  /** Refreshes last-seen from any authenticated traffic. */
  seen(id: PeerId): void {
    const record = this.members.get(id);
    if (record) record.lastSeen = this.now();
  }

  member(id: PeerId): MemberRecord | undefined {
    return this.members.get(id);
  }

  listMembers(): Array<MemberRecord & { online: boolean; onlineSince: number | null; allowedIn: string[] }> {
    const known = new Set<PeerId>(this.members.keys());
    for (const group of this.groups.values()) for (const id of group.allowed) known.add(id);
    return [...known].map((id) => {
      const record = this.members.get(id) ?? { id, name: '', address: '', joined: [], firstSeen: 0, lastSeen: 0 };
      const allowedIn = [...this.groups.keys()].filter((name) => this.groups.get(name)?.allowed.has(id));
      return { ...record, online: this.online.has(id), onlineSince: this.online.get(id) ?? null, allowedIn };
    });
  }

  /**
   * Drops open-group members not seen for the expiry time (not online, no datagram, no connection),
   * and forgets records that nothing holds any more. Configured and allowed ids are never expired.
   */
  expireIdle(): void {
    const cutoff = this.now() - this.expiryMs;
    for (const record of [...this.members.values()]) {
      if (this.online.has(record.id) || record.lastSeen > cutoff) continue;
      for (const name of record.joined.filter((joined) => this.groups.get(joined)?.guests.has(record.id))) {
        this.counters.expired++;
        this.dropGuest(record, name, 'idle member expired');
      }
      this.forgetIfUnheld(record);
    }
  }

  /**
   * State from before the cap (or a cap lowered since) may hold more guests than it allows: keep the
   * most recently seen, so one past flood does not cost every later distribution for a month.
   */
  private trimToCap(): void {
    for (const [name, group] of this.groups) {
      const excess = group.guests.size - this.maxOpenMembers;
      if (excess <= 0) continue;
      const records = [...group.guests].map((id) => this.members.get(id)).filter((r): r is MemberRecord => r !== undefined);
      const stalest = records.sort((a, b) => a.lastSeen - b.lastSeen).slice(0, excess);
      this.options.log.warn({ group: name, dropped: stalest.length, cap: this.maxOpenMembers }, 'open group over its cap; dropping the longest unseen members');
      for (const record of stalest) {
        this.dropGuest(record, name, 'member dropped over the open-group cap');
        this.forgetIfUnheld(record);
      }
    }
  }

  /** Takes a guest out of an open group; it leaves, and what is queued for it is cancelled. */
  private dropGuest(record: MemberRecord, name: string, why: string): void {
    record.joined = record.joined.filter((joined) => joined !== name);
    this.groups.get(name)?.guests.delete(record.id);
    this.options.log.info({ member: record.id, group: name, lastSeen: new Date(record.lastSeen).toISOString() }, why);
    this.emit('left', record.id, name);
    this.emit('revoked', record.id, name);
    this.schedulePersist();
  }

  /** A record in no group and not allowed anywhere is worth nothing: forget it. */
  private forgetIfUnheld(record: MemberRecord): void {
    if (record.joined.length > 0 || this.isExplicit(record.id) || this.online.has(record.id)) return;
    this.members.delete(record.id);
    this.schedulePersist();
  }

  private schedulePersist(): void {
    if (this.persistTimer) return;
    const delay = Math.max(PERSIST_DELAY_MS, this.lastPersistAt + PERSIST_MIN_GAP_MS - Date.now());
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      void this.persist();
    }, delay);
  }

  private persist(): Promise<void> {
    this.lastPersistAt = Date.now();
    this.counters.persisted++;
    const state: Persisted = { version: 1, allowed: {}, revoked: {}, members: [...this.members.values()] };
    for (const [name, group] of this.groups) {
      state.allowed[name] = [...group.allowed].filter((id) => !group.config.members.includes(id));
      state.revoked[name] = [...group.revoked];
    }
    this.persisting = this.persisting
      .then(() => writeFileAtomic(this.path, `${JSON.stringify(state, null, 2)}\n`))
      .then(() => this.persisted(), (err: unknown) => this.persistFailed(err));
    return this.persisting;
  }

  private persisted(): void {
    if (!this.unwritten) return;
    this.unwritten = undefined;
    this.options.log.info({ path: this.path }, 'membership written again');
  }

  /**
   * The changes stay only in memory until a later write takes them (a disk full for a moment, say by
   * a copy into the store that fails): tried again at the storm pace, logged once until it works.
   */
  private persistFailed(err: unknown): void {
    const failure = stateWriteError('cannot write the membership', this.path, err);
    if (!this.unwritten) this.options.log.error({ err: failure }, 'cannot persist membership; trying again');
    this.unwritten = failure;
    if (!this.closed) this.schedulePersist();
  }

  /** Writes any pending change now; resolves when it is on disk, or when that write failed (logged). */
  async flush(): Promise<void> {
    if (this.persistTimer) {
      clearTimeout(this.persistTimer);
      this.persistTimer = undefined;
      await this.persist();
    }
    await this.persisting;
  }

  /**
   * flush(), for an operator's change: a write that fails is their error, with what becomes of the
   * change (it holds in memory, and is written as soon as the disk takes it).
   */
  async save(): Promise<void> {
    await this.flush();
    const failure = this.unwritten;
    if (failure) {
      throw new GroupcastError(failure.code, `${failure.message}; the change holds until the server stops and is written as soon as the disk takes it`, { cause: failure });
    }
  }

  close(): Promise<void> {
    this.closed = true;
    clearInterval(this.expiryTimer);
    return this.flush();
  }
}
