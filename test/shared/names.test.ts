import { describe, expect, it } from 'vitest';
import { MAX_FILE_NAME, MAX_GROUP_NAME } from '../../packages/shared/src/constants.js';
import { ErrorCode } from '../../packages/shared/src/errors.js';
import { validateFileName, validateGroupName } from '../../packages/shared/src/names.js';
import { expectCode } from './helpers.js';

const validators = [
  ['validateGroupName', validateGroupName, MAX_GROUP_NAME],
  ['validateFileName', validateFileName, MAX_FILE_NAME],
] as const;

describe.each(validators)('%s', (_name, validate, maxBytes) => {
  it.each([
    ['empty', ''],
    ['dot', '.'],
    ['dot dot', '..'],
    ['parent path', '../x'],
    ['absolute path', '/abs'],
    ['slash', 'a/b'],
    ['backslash', 'a\\b'],
    ['trailing slash', 'a/'],
    ['NUL', 'a\u0000b'],
    ['newline', 'a\nb'],
    ['tab', 'a\tb'],
    ['escape', '\u001b[31mred'],
    ['DEL', 'a\u007f'],
    ['C1 control', 'a\u0085b'],
    ['leading space', ' name'],
    ['trailing space', 'name '],
    ['only spaces', '   '],
    ['trailing newline', 'name\n'],
  ])('refuses %s with NAME', (_what, name) => {
    expectCode(() => validate(name), ErrorCode.NAME);
  });

  it('counts the cap in UTF-8 bytes, not characters', () => {
    expect(validate('a'.repeat(maxBytes))).toBe('a'.repeat(maxBytes));
    expectCode(() => validate('a'.repeat(maxBytes + 1)), ErrorCode.NAME);
    const twoByte = 'é'.repeat(Math.floor(maxBytes / 2));
    expect(validate(twoByte)).toBe(twoByte);
    expectCode(() => validate(`${twoByte}é`), ErrorCode.NAME);
    // Fewer characters than the cap, more bytes.
    const fourByte = '😀'.repeat(Math.floor(maxBytes / 4) + 1);
    expect(fourByte.length).toBeLessThan(maxBytes);
    expectCode(() => validate(fourByte), ErrorCode.NAME);
  });

  it.each(['Developers', 'report.pdf', 'Présentation 2026.pdf', '設計 資料', 'a', 'a.b.c', 'x..y', 'name with  spaces', 'trailing.', '-dash', '😀'])(
    'accepts %j unchanged',
    (name) => {
      expect(validate(name)).toBe(name);
    },
  );
});

describe('dot names', () => {
  it('refuses a group starting with a dot: the member keeps its own folders beside the groups', () => {
    expectCode(() => validateGroupName('.hidden'), ErrorCode.NAME);
  });

  it.each(['.env', '.hidden', '..x', '.gitignore'])('accepts the dotfile %j as a file name', (name) => {
    expect(validateFileName(name)).toBe(name);
  });

  it.each(['.groupcast-partial', '.groupcast-versions'])('refuses the reserved %j as a file name', (name) => {
    expectCode(() => validateFileName(name), ErrorCode.NAME);
  });
});
