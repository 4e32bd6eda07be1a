import {
  ackProof, codeIsForServer, deriveInviteKey, joinProof, nakProof, proofMatches,
  type ControlMessage, type JoinCode, type PeerId, type Signer,
} from '@groupcast/shared';

type Ack = Extract<ControlMessage, { type: 'ack' }>;
type Nak = Extract<ControlMessage, { type: 'nak' }>;

/**
 * The member's side of a join code (`--code`): the key stretched from it once at start, the proof each
 * JOIN carries, and the check of the server's proof in an ACK — which is what lets a member with no
 * pin trust the server that answers: only the server that issued the code can make that proof.
 */
export class Invitation {
  private constructor(
    private readonly code: JoinCode,
    private readonly key: Buffer,
    private readonly signer: Signer,
  ) {}

  static async open(code: JoinCode, signer: Signer): Promise<Invitation> {
    return new Invitation(code, await deriveInviteKey(code), signer);
  }

  /** The start of the id of the server the code is for; not a secret. */
  get serverPrefix(): string {
    return this.code.serverPrefix;
  }

  isFor(server: PeerId): boolean {
    return codeIsForServer(this.code, server);
  }

  joinProof(group: string): Buffer {
    return joinProof(this.key, this.signer.publicKey, group);
  }

  /** Did the server that signed this ACK (with `serverKey`) issue the code? */
  verifyAck(ack: Ack, serverKey: Buffer): boolean {
    return proofMatches(ackProof(this.key, serverKey, this.signer.publicKey, ack.request, ack.group), ack.proof);
  }

  /** Did the server that signed this NAK (a used, expired or cancelled code) issue the code? Then its refusal is final. */
  verifyNak(nak: Nak, serverKey: Buffer): boolean {
    return proofMatches(nakProof(this.key, serverKey, this.signer.publicKey, nak.request, nak.reason, nak.group), nak.proof);
  }
}
