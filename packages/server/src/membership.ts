import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import {
  ErrorCode, GroupcastError, NakReason, readJsonState, writeFileAtomic,
  type GroupInfo, type Logger, type PeerId,
} from '@groupcast/shared';
import type { GroupConfig } from './config.js';

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
}

export interface MembershipEvents {
  joined: [id: PeerId, group: string];
  left: [id: PeerId, group: string];
  /** The member lost access to the group (revoked or left): cancel what is queued for it. */
  revoked: [id: PeerId, group: string];
  /** The member's data connection came up or went away. */
  presence: [id: PeerId, online: boolean];
}

const PERSIST_DELAY_MS = 200;

/**
 * Who may be in which group, and who is. Authorization = the group is open, or the id is listed in
 * the config or allowed at run time, and not revoked. Joins and runtime changes persist to
 * members.json (coalesced, so a join storm costs a few writes, not one per join).
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly groups = new Map<string, Group>();
  private readonly members = new Map<PeerId, MemberRecord>();
  /** Members with a data connection now, and since when. */
  private readonly online = new Map<PeerId, number>();
  private readonly path: string;
  private persistTimer: NodeJS.Timeout | undefined;
  private persisting: Promise<void> = Promise.resolve();

  constructor(
    private readonly options: { log: Logger; groups: GroupConfig[]; stateDir: string; clock?: () => number },
  ) {
    super();
    this.path = join(options.stateDir, 'members.json');
    for (const config of options.groups) {
      this.groups.set(config.name, { config, allowed: new Set(config.members), revoked: new Set() });
    }
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
    for (const record of state.members) this.members.set(record.id, record);
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
    const record = this.touch(id, seen.address);
    if (!record.joined.includes(groupName)) {
      record.joined.push(groupName);
      this.options.log.info({ member: id, group: groupName, address: seen.address }, 'member joined');
      this.emit('joined', id, groupName);
    }
    this.schedulePersist();
    return { ok: true };
  }

  leave(id: PeerId, groupName: string, seen: { address: string }): Verdict {
    if (!this.groups.has(groupName)) {
      return { ok: false, reason: NakReason.UNKNOWN_GROUP, message: `no group named "${groupName}"` };
    }
    const record = this.members.get(id);
    if (record?.joined.includes(groupName)) {
      this.touch(id, seen.address);
      record.joined = record.joined.filter((name) => name !== groupName);
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
    this.options.log.info({ member: id, group: groupName }, 'member allowed');
    this.schedulePersist();
  }

  revoke(groupName: string, id: PeerId): void {
    const group = this.requireGroup(groupName);
    group.allowed.delete(id);
    group.revoked.add(id);
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

  setOnline(id: PeerId, online: boolean, seen?: { name: string; address: string }): void {
    if (online) {
      if (!this.online.has(id)) this.online.set(id, this.now());
      const record = this.touch(id, seen?.address ?? '');
      if (seen?.name) record.name = seen.name;
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

  private schedulePersist(): void {
    if (this.persistTimer) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      void this.persist();
    }, PERSIST_DELAY_MS);
  }

  private persist(): Promise<void> {
    const state: Persisted = { version: 1, allowed: {}, revoked: {}, members: [...this.members.values()] };
    for (const [name, group] of this.groups) {
      state.allowed[name] = [...group.allowed].filter((id) => !group.config.members.includes(id));
      state.revoked[name] = [...group.revoked];
    }
    this.persisting = this.persisting
      .then(() => writeFileAtomic(this.path, `${JSON.stringify(state, null, 2)}\n`))
      .catch((err: unknown) => this.options.log.error({ err, path: this.path }, 'cannot persist membership'));
    return this.persisting;
  }

  /** Writes any pending change now; resolves when it is on disk. */
  async flush(): Promise<void> {
    if (this.persistTimer) {
      clearTimeout(this.persistTimer);
      this.persistTimer = undefined;
      await this.persist();
    }
    await this.persisting;
  }

  close(): Promise<void> {
    return this.flush();
  }
}
