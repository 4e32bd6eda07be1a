import { join } from 'node:path';
import stringWidth from 'string-width';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, SERVER_BIN } from '../support/daemons.js';
import { sha256File } from '../support/files.js';
import { onTerminal } from './terminal.js';
import { Cluster, finalPath, MiB, Mounts, writeRandomFile, type Member } from '../durability/cluster.js';

/**
 * `distribute` on a real terminal (a pseudo-terminal from script(1), sized with stty): every bar it
 * draws fits the terminal's width, a long file name included, and the store's copy of a large file
 * shows as a "storing" bar before any delivery does. Without a terminal: plain lines, storing first.
 */
const h = harness();
const mounts = new Mounts(h);
const c = new Cluster(h);
const GROUP = 'Developers';
const COLUMNS = 40;
const LONG_NAME = 'release-candidate-2026-12-01-linux-x86_64-with-debug-symbols-and-documentation.tar.zst';
let alice: Member;
let source: string;

beforeAll(async () => {
  [alice] = await c.startGroup(GROUP, ['alice']);
  source = await mounts.tmpfs('600m');
});

afterAll(() => mounts.cleanup([c.server, alice.daemon]));


/**
 * What the terminal was asked to show, as the text of each write from a line start: a cursor move
 * (up, down, to a column) starts a new one as a carriage return does; the other escape sequences
 * (clears, cursor visibility) are removed.
 */
function renderedSegments(output: string): string[] {
  const plain = output
    // eslint-disable-next-line no-control-regex
    .replace(/\x1b\[[0-9;]*[ABEFGH]/g, '\r')
    // eslint-disable-next-line no-control-regex
    .replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '');
  return plain.split('\n').flatMap((line) => line.split('\r')).filter((segment) => segment.length > 0);
}

const isBar = (segment: string): boolean => /\d+%/.test(segment) && segment.includes('eta ');

describe('distribute progress', () => {
  it(`in a ${COLUMNS}-column terminal: every bar fits, the long name cut, and a 256 MiB file shows "storing" before any delivery`, async () => {
    const file = join(source, LONG_NAME);
    const sha256 = await writeRandomFile(file, 256 * MiB);
    const { code, output } = await onTerminal([SERVER_BIN, 'distribute', GROUP, file, '--state-dir', c.serverState, '--rate', '64M'], { columns: COLUMNS, timeoutMs: 120_000 });
    expect(code, output).toBe(0);
    const segments = renderedSegments(output);
    const bars = segments.filter(isBar);
    expect(bars.length, output).toBeGreaterThan(0);
    for (const bar of bars) expect(stringWidth(bar), JSON.stringify(bar)).toBeLessThanOrEqual(COLUMNS);
    const firstStoring = segments.findIndex((s) => isBar(s) && s.startsWith('storing'));
    const firstDelivery = segments.findIndex((s) => (isBar(s) && s.startsWith('alice')) || s.startsWith('✓ alice'));
    expect(firstStoring, output).toBeGreaterThanOrEqual(0);
    expect(firstDelivery, output).toBeGreaterThan(firstStoring);
    expect(bars.some((bar) => bar.startsWith('alice') && bar.includes('…')), 'the long name is cut in the middle').toBe(true);
    expect(await sha256File(finalPath(alice, GROUP, LONG_NAME))).toBe(sha256);
  });

  it('without a terminal: plain lines, no escape sequences, storing lines before the first delivery line', async () => {
    const file = join(source, 'plain.bin');
    await writeRandomFile(file, 32 * MiB);
    const result = await c.distribute(GROUP, [file], ['--progress-interval', '0']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).not.toContain('\x1b');
    const lines = result.stdout.split('\n');
    const firstStoring = lines.findIndex((line) => /^storing {2}plain\.bin {2}\d+%/.test(line));
    const firstDelivery = lines.findIndex((line) => line.startsWith('alice') || line.startsWith('✓ alice'));
    expect(firstStoring, result.stdout).toBeGreaterThanOrEqual(0);
    expect(firstDelivery, result.stdout).toBeGreaterThan(firstStoring);
  });
});
