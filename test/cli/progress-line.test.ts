import { describe, expect, it } from 'vitest';
import { displayWidth, fitProgress, middleEllipsis, type ProgressParts } from '../../packages/server/src/operator/progress-line.js';

/** The bar line of `distribute` on a terminal: it fits, and what matters most survives. */
const parts = (file: string, label = 'alice (PKHMN3L)'): ProgressParts => ({
  label, file, fraction: 0.36, sent: '69.3 MiB of 190.7 MiB', rate: '24.6 MiB/s', eta: '6.0s', sources: 'from server 12.0 MiB, from peers 57.3 MiB',
});
const LONG = 'release-candidate-2026-12-01-linux-x86_64-with-debug-symbols-and-docs.tar.zst';

describe('fitProgress', () => {
  for (const columns of [40, 80, 200]) {
    for (const file of ['big.iso', LONG, '設計図-最終版-第二稿-レビュー済み-本番用.psd']) {
      it(`${columns} columns, ${displayWidth(file)}-column name: fits, keeps percent, rate and ETA`, () => {
        const line = fitProgress(parts(file), columns);
        expect(displayWidth(line)).toBeLessThanOrEqual(columns - 1);
        expect(line).toContain('36%');
        expect(line).toContain('24.6 MiB/s');
        expect(line).toContain('eta 6.0s');
        expect(line.startsWith('alice')).toBe(true);
      });
    }
  }

  it('200 columns: the whole line, name, bar, bytes and sources', () => {
    const name = 'release-candidate-2026-12-01.tar.zst';
    const line = fitProgress(parts(name), 200);
    expect(line).toContain(name);
    expect(line).toContain('69.3 MiB of 190.7 MiB');
    expect(line).toContain('from peers 57.3 MiB');
    expect(line).toMatch(/\[█+░+\]/);
  });

  it('80 columns and a long name: the name is cut in the middle, its extension kept, the bar narrower', () => {
    const line = fitProgress(parts(LONG), 80);
    expect(line).not.toContain(LONG);
    expect(line).toMatch(/^alice \(PKHMN3L\) {2}release-\S+…\S+\.tar\.zst \[█+░+\] 36%/);
  });

  it('40 columns: the member\'s name and the file\'s both still show', () => {
    expect(fitProgress(parts('big.iso'), 40)).toMatch(/^alice… big\.iso 36% 24\.6 MiB\/s eta 6\.0s$/);
    expect(fitProgress(parts(LONG), 40)).toMatch(/^alice… re\S*…\S*zst 36%/);
  });

  it('a short name at 80 columns drops the sources before it is cut', () => {
    const line = fitProgress(parts('big.iso'), 80);
    expect(line).toContain('big.iso');
    expect(line).not.toContain('from server');
  });

  it('a terminal narrower than the essentials: still within the width', () => {
    for (const columns of [1, 5, 12, 20, 26]) expect(displayWidth(fitProgress(parts(LONG), columns))).toBeLessThanOrEqual(Math.max(1, columns - 1));
  });

  it('a storing line (no sources) and a done one', () => {
    const line = fitProgress({ ...parts('big.iso', 'storing'), sources: '', fraction: 1 }, 80);
    expect(line).toMatch(/^storing {2}big\.iso \[█{20}\] 100%/);
  });
});

describe('middleEllipsis', () => {
  it('keeps a fitting text, cuts a long one to the width with its start and end', () => {
    expect(middleEllipsis('short.txt', 20)).toBe('short.txt');
    expect(middleEllipsis('abcdefghijklmnopqrstuvwxyz', 9)).toBe('abcd…wxyz');
    expect(middleEllipsis('abc', 1)).toBe('…');
    expect(middleEllipsis('abc', 0)).toBe('');
  });

  it('counts wide characters as two columns', () => {
    const cut = middleEllipsis('設計図設計図設計図', 9);
    expect(displayWidth(cut)).toBeLessThanOrEqual(9);
    expect(cut).toContain('…');
  });
});
