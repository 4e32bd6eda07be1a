// The member's pure decisions: where a file may land, where a transfer resumes, when space is short,
// how the received log reads back, and how flags become options.

import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode, isGroupcastError } from '@groupcast/shared';
import { placementFor, resumeOffset, spaceShortfall, partialPathFor, PARTIAL_DIR } from '../packages/client/src/receive/download-area.js';
import { parseReceivedLog } from '../packages/client/src/receive/received-log.js';
import { defaultDownloadsDir, parseDuration, resolveOptions } from '../packages/client/src/options.js';
import { formatGroupListing } from '../packages/client/src/discovery/groups-table.js';

const ROOT = '/srv/downloads';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isGroupcastError(err) ? err.code : 'not a GroupcastError';
  }
  return undefined;
}

describe('placementFor', () => {
  it('puts a file directly in <root>/<group>', () => {
    expect(placementFor(ROOT, 'Developers', 'report.pdf')).toEqual({
      groupDir: join(ROOT, 'Developers'),
      finalPath: join(ROOT, 'Developers', 'report.pdf'),
    });
  });

  it('resolves a relative root', () => {
    expect(placementFor('dl', 'g', 'f').finalPath).toBe(resolve('dl', 'g', 'f'));
  });

  it.each([
    ['..', 'f'], ['.', 'f'], ['', 'f'], ['a/b', 'f'], ['.hidden', 'f'], [PARTIAL_DIR, 'f'],
    ['g', '..'], ['g', '../../etc/passwd'], ['g', '/etc/passwd'], ['g', 'a\\b'], ['g', '.groupcast-versions'],
    ['g', 'bell\u0007'], ['g', ' lead'], ['g', 'x'.repeat(256)], ['x'.repeat(65), 'f'],
  ])('refuses group %j / name %j with NAME', (group, name) => {
    expect(codeOf(() => placementFor(ROOT, group, name))).toBe(ErrorCode.NAME);
  });

  it('accepts ordinary unicode names within the byte cap', () => {
    expect(placementFor(ROOT, 'Дизайн', 'résumé 2026 (final).pdf').finalPath).toBe(join(ROOT, 'Дизайн', 'résumé 2026 (final).pdf'));
    expect(() => placementFor(ROOT, 'g', 'é'.repeat(127))).not.toThrow(); // 254 bytes
    expect(codeOf(() => placementFor(ROOT, 'g', 'é'.repeat(128)))).toBe(ErrorCode.NAME); // 256 bytes
  });
});

describe('partialPathFor', () => {
  it('keys partials by transfer id inside the hidden folder', () => {
    const hex = '00112233445566778899aabbccddeeff';
    expect(partialPathFor(ROOT, hex)).toBe(join(ROOT, PARTIAL_DIR, hex));
  });

  it('refuses anything but 32 lowercase hex digits', () => {
    expect(codeOf(() => partialPathFor(ROOT, '../x'))).toBe(ErrorCode.PROTOCOL);
  });
});

describe('resumeOffset', () => {
  it('starts at 0 without a partial', () => expect(resumeOffset(undefined, 100)).toBe(0));
  it('resumes from what the partial holds', () => expect(resumeOffset(40, 100)).toBe(40));
  it('a complete partial needs no data', () => expect(resumeOffset(100, 100)).toBe(100));
  it('a partial longer than the file is not this file: start over', () => expect(resumeOffset(101, 100)).toBe(0));
  it('an empty file', () => expect(resumeOffset(undefined, 0)).toBe(0));
});

describe('spaceShortfall', () => {
  it('is undefined when the rest fits', () => {
    expect(spaceShortfall({ bavail: 10, bsize: 4096 }, 40960)).toBeUndefined();
  });
  it('says how much is needed and available', () => {
    expect(spaceShortfall({ bavail: 10, bsize: 4096 }, 40961)).toBe('insufficient space: need 40961 bytes, have 40960');
  });
});

describe('parseReceivedLog', () => {
  const record = (transfer: string) =>
    JSON.stringify({ transfer, group: 'g', name: 'f', sha256: 'ab', size: 1, path: '/x', time: 't' });

  it('reads one record per line', () => {
    const text = `${record('a'.repeat(32))}\n${record('b'.repeat(32))}\n`;
    expect(parseReceivedLog(text).records.map((r) => r.transfer)).toEqual(['a'.repeat(32), 'b'.repeat(32)]);
  });

  it('skips and counts a torn tail and junk', () => {
    const text = `${record('a'.repeat(32))}\nnot json\n{"transfer":"short"}\n${record('c'.repeat(32)).slice(0, 20)}`;
    const { records, bad } = parseReceivedLog(text);
    expect(records).toHaveLength(1);
    expect(bad).toBe(3);
  });
});

describe('options', () => {
  const base = { stateDir: '/tmp/s', downloads: '/tmp/d', interface: '127.0.0.1' };

  it('resolves defaults', () => {
    const options = resolveOptions(base);
    expect(options.groupAddress).toBe('239.255.77.77');
    expect(options.port).toBe(47700);
    expect(options.iface.address).toBe('127.0.0.1');
    expect(options.code).toBeUndefined();
    expect(Buffer.byteLength(options.name)).toBeLessThanOrEqual(64);
  });

  it('parses --server with and without a port', () => {
    expect(resolveOptions({ ...base, server: '10.0.0.5' }).unicast).toEqual({ address: '10.0.0.5', port: 47700 });
    expect(resolveOptions({ ...base, server: '10.0.0.5:5000' }).unicast).toEqual({ address: '10.0.0.5', port: 5000 });
  });

  it.each([
    [{ groups: ['../x'] }],
    [{ serverId: 'nope' }],
    [{ port: 0 }],
    [{ port: 1.5 }],
    [{ server: 'host:99999' }],
    [{ groupAddress: 'not-an-ip' }],
    [{ interface: 'no-such-interface0' }],
    [{ name: 'n'.repeat(65) }],
    [{ code: 'c'.repeat(65) }],
    [{ code: 'UBIIK-7Q2MX-4PNRA' }],
    [{ code: 'UBIIK-7Q2MX-4PNRO', trustFirstServer: true }],
    [{ code: 'UBIIK-7Q2MX-4PNRO', serverId: 'QJGITKU-O7OK67Q-E3CTNCR-SWMRFHF-FM4SW2Z-GTBQDN2-LUMOO5V-A6Z3TAT' }],
  ])('refuses %j with USAGE', (bad) => {
    expect(codeOf(() => resolveOptions({ ...base, ...bad }))).toBe(ErrorCode.USAGE);
  });

  it('reads a join code as a person types it', () => {
    const { code } = resolveOptions({ ...base, code: 'ubiik 7q2mx 4pnr0', serverId: 'UBIIG7M-FA4CYFG-THXHFFQ-TCEEPTV-BRFS4IE-WNYSSE4-Z63ZDTT-YXSGSQX' });
    expect(code).toEqual({ text: 'UBIIK-7Q2MX-4PNRO', serverPrefix: 'UBII', secret: 'K7Q2MX4PNR' });
  });

  it('de-duplicates groups', () => {
    expect(resolveOptions({ ...base, groups: ['a', 'b', 'a'] }).groups).toEqual(['a', 'b']);
  });

  it('parses durations', () => {
    expect(parseDuration('3s')).toBe(3000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('2')).toBe(2000);
    expect(parseDuration('1m')).toBe(60_000);
    expect(codeOf(() => parseDuration('soon'))).toBe(ErrorCode.USAGE);
  });

  it('puts downloads under the XDG folder when the desktop names one', () => {
    expect(defaultDownloadsDir({ XDG_DOWNLOAD_DIR: '/home/a/Dl' })).toBe('/home/a/Dl/groupcast');
    expect(defaultDownloadsDir({})).toMatch(/Downloads\/groupcast$/);
  });
});

describe('formatGroupListing', () => {
  it('neutralises escape sequences from the wire', () => {
    const text = formatGroupListing({
      server: { id: 'ID' as never, name: 'evil\u001b]0;title\u0007', address: '10.0.0.1', tcpPort: 47701, pinned: true },
      groups: [{ name: 'g', description: 'red \u001b[31m', open: true }],
    });
    // Line breaks are the table's own; nothing else below U+0020 (or C1) may reach the terminal.
    // eslint-disable-next-line no-control-regex
    expect(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(text)).toBe(false);
    expect(text).toContain('pinned');
    expect(text).toContain('open');
  });
});
