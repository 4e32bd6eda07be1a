import { formatBytes, formatTable, printable, shortId } from '@groupcast/shared';
import type { DeliveryChange, PruneResult } from './operations.js';
import { why } from './status-view.js';

/** What `cancel` and `retry` print: the deliveries changed, then those left as they were and why. */
export function changeText(done: string, result: DeliveryChange): string {
  const { transfer, changed, unchanged } = result;
  const name = `${printable(transfer.name)} (transfer ${transfer.id.slice(0, 12)}, ${transfer.group})`;
  const lines = [changed.length === 0 ? `nothing ${done} for ${name}` : `${done} ${changed.length} ${changed.length === 1 ? 'delivery' : 'deliveries'} of ${name}`];
  if (changed.length > 0) {
    lines.push(formatTable(['MEMBER', 'NAME', 'STATE', 'WHY'], changed.map((d) => [shortId(d.member), printable(d.memberName) || '-', d.state, why(d)])));
  }
  if (unchanged.length > 0) {
    lines.push('left as they were:');
    lines.push(formatTable(['MEMBER', 'NAME', 'STATE', 'WHY'], unchanged.map((d) => [shortId(d.member), printable(d.memberName) || '-', d.state, d.why])));
  }
  return lines.join('\n');
}

/** What `prune` prints. */
export function pruneText(result: PruneResult): string {
  if (result.files === 0) return 'nothing to prune: every stored file is still being delivered or kept for the backlog';
  return `removed ${result.files} ${result.files === 1 ? 'file' : 'files'} (${formatBytes(result.bytes)}) from the store`;
}
