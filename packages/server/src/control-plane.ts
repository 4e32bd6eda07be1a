import type { RemoteInfo } from 'node:dgram';
import {
  datagramLength, MAX_DATAGRAM, NAK_REASON_NAMES, NakReason,
  type ControlEndpoint, type ControlMessage, type Datagram, type GroupInfo, type Logger, type MembershipOp, type Peer,
} from '@groupcast/shared';
import type { Invites } from './invites.js';
import type { Membership, Verdict } from './membership.js';

/** Splits the group list into GROUPS pages that each fit one datagram. */
export function groupPages(request: Buffer, tcpPort: number, groups: GroupInfo[]): ControlMessage[] {
  const pages: GroupInfo[][] = [[]];
  for (const group of groups) {
    const page = pages[pages.length - 1] ?? [];
    page.push(group);
    const probe: ControlMessage = { type: 'groups', request, page: 0, pages: 1, tcpPort, groups: page };
    if (page.length > 1 && (page.length > 255 || datagramLength(probe) > MAX_DATAGRAM)) {
      page.pop();
      pages.push([group]);
    }
  }
  return pages.map((page, index) => ({ type: 'groups', request, page: index, pages: pages.length, tcpPort, groups: page }));
}

const NO_PROOF: Buffer = Buffer.alloc(0);

/**
 * Answers members on the control plane: LIST with the groups, JOIN and LEAVE with ACK or NAK, each
 * unicast back to the sender. Handlers are idempotent, since members retry until answered.
 */
export class ControlPlane {
  readonly counters = { lists: 0, joins: 0, leaves: 0, naks: 0 };

  constructor(
    private readonly options: {
      log: Logger;
      endpoint: ControlEndpoint;
      membership: Membership;
      tcpPort: () => number;
      /** Checks a JOIN's join-code proof, before authorization. */
      invites: Invites;
    },
  ) {}

  start(): void {
    this.options.endpoint.on('message', (datagram, from) => this.handle(datagram, from));
  }

  private handle(datagram: Datagram, from: RemoteInfo): void {
    const { message, sender } = datagram;
    const peer = { address: from.address, port: from.port };
    switch (message.type) {
      case 'list':
        this.counters.lists++;
        for (const page of groupPages(datagram.nonce, this.options.tcpPort(), this.options.membership.groupInfo())) {
          this.options.endpoint.send(page, peer);
        }
        return;
      case 'join':
        this.counters.joins++;
        this.join(datagram, message, peer).catch((err: unknown) => {
          this.options.log.error({ err, member: sender, group: message.group }, 'cannot record a join');
          this.answer(datagram, 'join', message.group, { ok: false, reason: NakReason.OTHER, message: 'server error' }, peer);
        });
        return;
      case 'leave':
        this.counters.leaves++;
        this.answer(datagram, 'leave', message.group, this.options.membership.leave(sender, message.group, peer), peer);
        return;
      default:
        return;
    }
  }

  /** A join-code proof is checked first (it may enroll the id); then the usual authorization. */
  private async join(datagram: Datagram, message: Extract<ControlMessage, { type: 'join' }>, peer: Peer): Promise<void> {
    const { membership, invites } = this.options;
    const { group } = message;
    let answerProof: Buffer = NO_PROOF;
    if (message.proof.length > 0 && membership.hasGroup(group)) {
      const checked = await invites.check(datagram, message, peer.address);
      if (!checked.ok) {
        this.answer(datagram, 'join', group, checked, peer);
        return;
      }
      answerProof = checked.proof;
    }
    this.answer(datagram, 'join', group, membership.join(datagram.sender, group, peer), peer, answerProof);
  }

  private answer(datagram: Datagram, op: MembershipOp, group: string, verdict: Verdict, peer: Peer, proof = NO_PROOF): void {
    const request = datagram.nonce;
    if (verdict.ok) {
      this.options.endpoint.send({ type: 'ack', request, op, group, tcpPort: this.options.tcpPort(), proof }, peer);
      return;
    }
    this.counters.naks++;
    this.options.log.info({ member: datagram.sender, group, op, reason: NAK_REASON_NAMES[verdict.reason], address: peer.address }, `${op} refused`);
    this.options.endpoint.send({ type: 'nak', request, op, group, reason: verdict.reason, message: verdict.message }, peer);
  }
}
