import { describe, expect, it } from 'vitest';
import { isLinkLocal, parseHostPort, resolveInterface } from '../../packages/shared/src/runtime/network.js';

describe('resolveInterface', () => {
  it('takes an IPv4 address as the socket interface', () => {
    expect(resolveInterface('127.0.0.1', 'IPv4')).toMatchObject({ family: 'IPv4', address: '127.0.0.1', socketInterface: '127.0.0.1', name: 'lo' });
  });

  it('scopes IPv6 by interface name and matches an address however it is spelled', () => {
    for (const spelling of ['::1', '0:0:0:0:0:0:0:1', '0::0:1']) {
      expect(resolveInterface(spelling, 'IPv6')).toMatchObject({ family: 'IPv6', address: '::1', socketInterface: '::%lo', name: 'lo' });
    }
  });

  it('refuses an address the host does not have', () => {
    expect(() => resolveInterface('192.0.2.1', 'IPv4')).toThrow(expect.objectContaining({ code: 'GC_ERR_CONFIG' }));
  });
});

describe('isLinkLocal', () => {
  it('recognises fe80::/10 with or without a scope', () => {
    expect(isLinkLocal('fe80::1')).toBe(true);
    expect(isLinkLocal('FE80::1%eth0')).toBe(true);
    expect(isLinkLocal('febf::1')).toBe(true);
    expect(isLinkLocal('fec0::1')).toBe(false);
    expect(isLinkLocal('fd77::1')).toBe(false);
    expect(isLinkLocal('10.0.0.1')).toBe(false);
  });
});

describe('parseHostPort', () => {
  it('reads HOST, HOST:PORT, [V6]:PORT and a bare IPv6 address', () => {
    expect(parseHostPort('10.0.0.1', 47700)).toEqual({ host: '10.0.0.1', port: 47700 });
    expect(parseHostPort('10.0.0.1:5000', 47700)).toEqual({ host: '10.0.0.1', port: 5000 });
    expect(parseHostPort('[fd77::1]:5000', 47700)).toEqual({ host: 'fd77::1', port: 5000 });
    expect(parseHostPort('fd77::1', 47700)).toEqual({ host: 'fd77::1', port: 47700 });
  });
});
