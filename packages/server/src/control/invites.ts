import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  ackProof, deriveInviteKey, ErrorCode, GroupcastError, joinProof, NakReason, nakProof, newJoinCode, NO_PROOF, proofMatches,
  RateLimitedLog, readJsonState, writeFileAtomic,
  type ControlMessage, type Datagram, type Logger, type PeerId, type Signer,
} from '@groupcast/shared';
import { AttemptLimiter } from './attempt-limiter.js';
import type { Membership } from './membership.js';

/** A stored invite. The code itself is never stored, only the key derived from it. */
interface InviteRecord {
  id: string;
  group: string;
  key: string;
  uses: number;
  redeemedBy: PeerId[];
  createdAt: number;
  expiresAt: number;
  /** When the operator cancelled it (`group-server invites cancel`); a cancelled code enrolls nobody. */
  cancelledAt?: number;
}

/** What `group-server invites` shows of an invite: never the code or its key. */
export interface InviteView {
  /** The random invite id printed beside the code at creation: `invites cancel` takes it or a prefix. */
  invite: string;
  group: string;
  uses: number;
  usesLeft: number;
  state: 'active' | 'used' | 'expired' | 'cancelled';
  createdAt: number;
  expiresAt: number;
  cancelledAt: number | null;
}

interface Persisted {
  version: 1;
  invites: InviteRecord[];
}

export interface CreatedInvite {
  /** The code to hand to the member: returned once, to the operator, and nowhere else. */
  code: string;
  invite: string;
  group: string;
  uses: number;
  expiresAt: number;
}

type Join = Extract<ControlMessage, { type: 'join' }>;

/** The verdict on a JOIN's join-code proof: refuse it, or go on to the membership check (with the proof for the ACK). */
/** `proof` on a refusal: the NAK's proof that this server issued the (used, expired or cancelled) code, or none. */
export type InviteCheck =
  | { ok: false; reason: NakReason; message: string; proof: Buffer }
  | { ok: true; proof: Buffer };

export const DEFAULT_INVITE_TTL_MS = 3_600_000;
export const MAX_INVITE_TTL_MS = 30 * 24 * 3_600_000;
export const MAX_INVITE_USES = 1_000;
const MAX_INVITES = 1_000;
/** How long a spent or expired invite is remembered: to answer "expired" or "used", and for ACK retries. */
const REMEMBER_MS = 24 * 3_600_000;
/** Wrong proofs allowed per source address and per id: a burst of 5, then one every 10 s. */
const PER_SOURCE = { burst: 5, refillMs: 10_000 };
/** For everyone together, whatever addresses and ids a guesser forges: 20, then one every 2 s. */
const GLOBAL = { burst: 20, refillMs: 2_000 };
/** What a member is told when its code matches an invite that no longer enrolls anyone. */
const REFUSALS = { used: 'join code already used', expired: 'join code expired', cancelled: 'join code cancelled' } as const;
/** The shortest invite id prefix `invites cancel` accepts, so a slip of one character cannot cancel a random invite. */
export const MIN_INVITE_PREFIX = 4;

/**
 * One-time, expiring join codes (`group-server invite`), kept in `<stateDir>/invites.json` (0600).
 * A JOIN that carries a proof (invite.ts in shared) is checked here before the membership check: a
 * valid proof of a live code enrolls the sender's id in the group (persisted before the ACK goes
 * out). Wrong proofs are counted per source address, per id and in all; past the limits, proofs are
 * not even checked, and the answer is NAK RATE_LIMITED.
 */
export class Invites {
  readonly counters = { created: 0, redeemed: 0, refused: 0, rateLimited: 0 };
  private readonly records = new Map<string, InviteRecord & { keyBytes: Buffer }>();
  private readonly perSource = new AttemptLimiter(PER_SOURCE);
  private readonly global = new AttemptLimiter(GLOBAL);
  private readonly warn: RateLimitedLog;
  private readonly path: string;
  private saved: Promise<void> = Promise.resolve();

  constructor(
    private readonly options: { log: Logger; stateDir: string; signer: Signer; membership: Membership; clock?: () => number },
  ) {
    this.path = join(options.stateDir, 'invites.json');
    this.warn = new RateLimitedLog(options.log);
  }

  private now(): number {
    return (this.options.clock ?? Date.now)();
  }

  async load(): Promise<void> {
    const state = await readJsonState<Persisted>(this.path);
    if (!state) return;
    for (const record of state.invites) this.records.set(record.id, { ...record, keyBytes: Buffer.from(record.key, 'hex') });
    this.prune();
  }

  async create(group: string, uses: number, ttlMs: number): Promise<CreatedInvite> {
    if (!this.options.membership.hasGroup(group)) throw new GroupcastError(ErrorCode.UNKNOWN_GROUP, `no group named "${group}"`);
    if (!Number.isInteger(uses) || uses < 1 || uses > MAX_INVITE_USES) {
      throw new GroupcastError(ErrorCode.USAGE, `uses must be a whole number from 1 to ${MAX_INVITE_USES}`);
    }
    if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_INVITE_TTL_MS) {
      throw new GroupcastError(ErrorCode.USAGE, 'ttl must be more than 0 and at most 30 days');
    }
    this.prune();
    if (this.records.size >= MAX_INVITES) {
      throw new GroupcastError(ErrorCode.USAGE, `${MAX_INVITES} invites are pending; let some expire first`);
    }
    const code = newJoinCode(this.options.signer.id);
    const keyBytes = await deriveInviteKey(code);
    const now = this.now();
    const record = {
      id: randomBytes(4).toString('hex'), group, key: keyBytes.toString('hex'), keyBytes, uses, redeemedBy: [],
      createdAt: now, expiresAt: now + ttlMs,
    };
    this.records.set(record.id, record);
    await this.persist();
    this.counters.created++;
    this.options.log.info({ invite: record.id, group, uses, expiresAt: new Date(record.expiresAt).toISOString() }, 'invite created');
    return { code: code.text, invite: record.id, group, uses, expiresAt: record.expiresAt };
  }

  /** Checks the join-code proof of a JOIN (carried by `datagram`) for a group the server has. */
  async check(datagram: Datagram, { group, proof }: Join, address: string): Promise<InviteCheck> {
    const { membership, log } = this.options;
    const member = datagram.sender;
    // An id already in the group is never refused over its code; it only gets no proof back for a code it did not redeem.
    const authorized = membership.isAuthorized(member, group);
    const now = this.now();
    const sources = [`address:${address}`, `id:${member}`];
    if (this.global.blocked('all', now) || sources.some((key) => this.perSource.blocked(key, now))) {
      if (authorized) return { ok: true, proof: NO_PROOF };
      this.counters.rateLimited++;
      this.warn.warn(`limited:${address}`, { member, address, group }, 'join code attempts rate limited');
      return { ok: false, reason: NakReason.RATE_LIMITED, message: 'too many wrong join codes; try again later', proof: NO_PROOF };
    }
    const invite = [...this.records.values()].find(
      (record) => record.group === group && proofMatches(joinProof(record.keyBytes, datagram.publicKey, group), proof),
    );
    if (!invite) {
      this.global.fail('all', now);
      for (const key of sources) this.perSource.fail(key, now);
      this.counters.refused++;
      this.warn.warn(`wrong:${address}`, { member, address, group }, 'wrong join code');
      return authorized ? { ok: true, proof: NO_PROOF } : { ok: false, reason: NakReason.BAD_CODE, message: 'wrong join code', proof: NO_PROOF };
    }
    const answer = ackProof(invite.keyBytes, this.options.signer.publicKey, datagram.publicKey, datagram.nonce, group);
    // Retries of a redemption get the same answer; an id revoked since is left to the membership check.
    if (invite.redeemedBy.includes(member)) {
      await this.saved;
      return { ok: true, proof: answer };
    }
    const state = this.stateOf(invite, now);
    if (state !== 'active') {
      if (authorized) return { ok: true, proof: NO_PROOF };
      this.counters.refused++;
      const message = REFUSALS[state];
      log.info({ member, address, group, invite: invite.id }, message);
      // This server issued the code, so it can prove it: the member may take this refusal as final.
      const proof = nakProof(invite.keyBytes, this.options.signer.publicKey, datagram.publicKey, datagram.nonce, NakReason.BAD_CODE, group);
      return { ok: false, reason: NakReason.BAD_CODE, message, proof };
    }
    invite.redeemedBy.push(member);
    membership.allow(group, member);
    await Promise.all([this.persist(), membership.flush()]);
    this.counters.redeemed++;
    log.info({ member, address, group, invite: invite.id, usesLeft: invite.uses - invite.redeemedBy.length }, 'join code redeemed');
    return { ok: true, proof: answer };
  }

  private stateOf(invite: InviteRecord, now: number): InviteView['state'] {
    if (invite.cancelledAt !== undefined) return 'cancelled';
    if (invite.redeemedBy.length >= invite.uses) return 'used';
    return now > invite.expiresAt ? 'expired' : 'active';
  }

  /** Every invite still remembered (live, or ended less than REMEMBER_MS ago), oldest first. */
  list(): InviteView[] {
    this.prune();
    const now = this.now();
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt).map((record) => ({
      invite: record.id,
      group: record.group,
      uses: record.uses,
      usesLeft: Math.max(0, record.uses - record.redeemedBy.length),
      state: this.stateOf(record, now),
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
      cancelledAt: record.cancelledAt ?? null,
    }));
  }

  /**
   * Cancels the invite whose id starts with `prefix` (at least MIN_INVITE_PREFIX characters): its code
   * is refused from now on ("join code cancelled"); members it already enrolled stay (revoke them).
   */
  async cancel(prefix: string): Promise<InviteView> {
    const wanted = prefix.trim().toLowerCase();
    if (!/^[0-9a-f]+$/.test(wanted) || wanted.length < MIN_INVITE_PREFIX) {
      throw new GroupcastError(ErrorCode.USAGE, `"${prefix.slice(0, 40)}" is not an invite id: give at least ${MIN_INVITE_PREFIX} of its hex characters (group-server invites lists them)`);
    }
    const matches = [...this.records.values()].filter((record) => record.id.startsWith(wanted));
    const [invite] = matches;
    if (!invite) throw new GroupcastError(ErrorCode.USAGE, `no invite with an id starting with "${wanted}" (group-server invites lists them)`);
    if (matches.length > 1) throw new GroupcastError(ErrorCode.USAGE, `"${wanted}" matches ${matches.length} invites (${matches.map((m) => m.id).join(', ')}): give more characters`);
    if (invite.cancelledAt === undefined) {
      invite.cancelledAt = this.now();
      await this.persist();
      this.options.log.info({ invite: invite.id, group: invite.group }, 'invite cancelled');
    }
    const view = this.list().find((record) => record.invite === invite.id);
    if (!view) throw new GroupcastError(ErrorCode.USAGE, `invite ${invite.id} is gone`);
    return view;
  }

  /** Forgets invites past expiry by more than REMEMBER_MS. */
  private prune(): void {
    const cutoff = this.now() - REMEMBER_MS;
    for (const [id, record] of this.records) if (record.expiresAt < cutoff) this.records.delete(id);
  }

  private persist(): Promise<void> {
    const state: Persisted = {
      version: 1,
      invites: [...this.records.values()].map(({ keyBytes: _keyBytes, ...record }) => record),
    };
    this.saved = this.saved
      .catch(() => undefined)
      .then(() => writeFileAtomic(this.path, `${JSON.stringify(state, null, 2)}\n`, 0o600));
    return this.saved;
  }
}
