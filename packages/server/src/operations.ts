import { isAbsolute } from 'node:path';
import { ErrorCode, GroupcastError, parsePeerId, type PeerId } from '@groupcast/shared';
import type { Handler } from './control-socket.js';
import type { DataPlane } from './data-plane.js';
import type { Distributor } from './distributor.js';
import type { Membership } from './membership.js';
import type { DeliveryRecord, Outbox, TransferRecord } from './outbox.js';

/** What the operator's commands see of a delivery. */
export interface DeliveryView {
  transfer: string;
  file: string;
  group: string;
  size: number;
  member: PeerId;
  memberName: string;
  online: boolean;
  state: DeliveryRecord['state'];
  attempts: number;
  bytesSent: number;
  reason: string;
  updatedAt: number;
}

export interface DistributeResult {
  transfers: TransferRecord[];
  deliveries: DeliveryView[];
  timedOut: boolean;
}

export type DistributeEvent =
  | { kind: 'start'; transfers: TransferRecord[]; members: Array<{ id: PeerId; name: string; online: boolean }> }
  | { kind: 'progress'; transfer: string; member: PeerId; position: number; size: number }
  | { kind: 'delivery'; delivery: DeliveryView };

interface Context {
  membership: Membership;
  distributor: Distributor;
  outbox: Outbox;
  dataPlane: DataPlane;
  describe: () => object;
}

const PROGRESS_INTERVAL_MS = 250;

function str(params: Record<string, unknown>, name: string): string {
  const value = params[name];
  if (typeof value !== 'string' || !value) throw new GroupcastError(ErrorCode.USAGE, `missing ${name}`);
  return value;
}

/** The daemon's answers to the operator's commands, served over the control socket. */
export function operations(ctx: Context): Record<string, Handler> {
  const { membership, distributor, outbox, dataPlane } = ctx;

  const view = (delivery: DeliveryRecord): DeliveryView => {
    const transfer = outbox.transfer(delivery.transfer);
    return {
      transfer: delivery.transfer,
      file: transfer?.name ?? '',
      group: transfer?.group ?? '',
      size: transfer?.size ?? 0,
      member: delivery.member,
      memberName: membership.member(delivery.member)?.name ?? '',
      online: membership.isOnline(delivery.member),
      state: delivery.state,
      attempts: delivery.attempts,
      bytesSent: delivery.bytesSent,
      reason: delivery.reason,
      updatedAt: delivery.updatedAt,
    };
  };

  const distribute: Handler = async (params, emit, signal) => {
    const group = str(params, 'group');
    const files = params.files;
    if (!Array.isArray(files) || files.length === 0 || !files.every((f): f is string => typeof f === 'string' && isAbsolute(f))) {
      throw new GroupcastError(ErrorCode.USAGE, 'files must be a non-empty list of absolute paths');
    }
    const waitAll = params.waitAll === true;
    const timeoutMs = typeof params.timeoutMs === 'number' && params.timeoutMs > 0 ? params.timeoutMs : undefined;
    const { transfers } = await distributor.distribute(group, files);
    const ids = new Set(transfers.map((t) => t.id));
    const deliveries = (): DeliveryRecord[] => transfers.flatMap((t) => outbox.deliveriesOf(t.id));
    const members = [...new Set(deliveries().map((d) => d.member))].map((id) => ({
      id, name: membership.member(id)?.name ?? '', online: membership.isOnline(id),
    }));
    emit({ kind: 'start', transfers, members } satisfies DistributeEvent);

    return new Promise<DistributeResult>((resolve) => {
      const lastProgress = new Map<string, number>();
      let timer: NodeJS.Timeout | undefined;
      const settled = (d: DeliveryRecord): boolean =>
        d.state === 'delivered' || d.state === 'failed' || (!waitAll && d.state === 'pending' && !dataPlane.session(d.member));
      const finish = (timedOut: boolean): void => {
        distributor.off('delivery', onDelivery);
        distributor.off('progress', onProgress);
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve({ transfers, deliveries: deliveries().map(view), timedOut });
      };
      const check = (): void => {
        if (deliveries().every(settled)) finish(false);
      };
      const onDelivery = (delivery: DeliveryRecord): void => {
        if (!ids.has(delivery.transfer)) return;
        emit({ kind: 'delivery', delivery: view(delivery) } satisfies DistributeEvent);
        check();
      };
      const onProgress = (transfer: string, member: PeerId, position: number): void => {
        const record = outbox.transfer(transfer);
        if (!record || !ids.has(transfer)) return;
        const k = `${transfer}/${member}`;
        const now = Date.now();
        if (position < record.size && now - (lastProgress.get(k) ?? 0) < PROGRESS_INTERVAL_MS) return;
        lastProgress.set(k, now);
        emit({ kind: 'progress', transfer, member, position, size: record.size } satisfies DistributeEvent);
      };
      const onAbort = (): void => finish(false);
      distributor.on('delivery', onDelivery);
      distributor.on('progress', onProgress);
      signal.addEventListener('abort', onAbort);
      if (timeoutMs) timer = setTimeout(() => finish(true), timeoutMs);
      check();
    });
  };

  return {
    distribute,
    status: async () => ({
      server: ctx.describe(),
      groups: membership.groupInfo().map((g) => ({ ...g, members: membership.targets(g.name).length })),
      members: membership.listMembers(),
      transfers: outbox.listTransfers().map((t) => ({ ...t, deliveries: outbox.deliveriesOf(t.id).map(view) })),
    }),
    groups: async () => membership.groupInfo().map((g) => ({
      ...g,
      members: membership.targets(g.name).length,
      online: membership.targets(g.name).filter((id) => membership.isOnline(id)).length,
    })),
    members: async () => membership.listMembers(),
    allow: async (params) => {
      const id = parsePeerId(str(params, 'id'));
      membership.allow(str(params, 'group'), id);
      await membership.flush();
      return { group: params.group, id, allowed: true };
    },
    revoke: async (params) => {
      const id = parsePeerId(str(params, 'id'));
      const group = str(params, 'group');
      membership.revoke(group, id);
      await membership.flush();
      if (!membership.isAdmissible(id)) dataPlane.session(id)?.close(new Error('access revoked'));
      return { group, id, revoked: true };
    },
  };
}
