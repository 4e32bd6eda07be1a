import { createPrivateKey, webcrypto, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { signerFromPrivateKey, type Signer } from '../identity.js';
import { ensurePrivateDir, writeFileAtomic } from './files.js';

type GeneratorKeys = Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

/**
 * The certificate library is needed only to make an identity, once per state directory. Loading it
 * costs more than everything else a daemon loads at start (~150 ms), so it is loaded only then.
 */
async function loadX509(): Promise<typeof X509> {
  await import('reflect-metadata');
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  return x509;
}

/** A daemon's identity: the Ed25519 key that signs its datagrams and the certificate TLS presents. */
export interface Identity {
  signer: Signer;
  privateKey: KeyObject;
  keyPem: string;
  certPem: string;
}

const ALGORITHM = { name: 'Ed25519' };
const CERT_YEARS = 100;

async function createIdentityFiles(commonName: string): Promise<{ keyPem: string; certPem: string }> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
    name: `CN=${commonName.replace(/[,=+<>#;"\\]/g, '_')}`,
    notBefore: new Date(now - 24 * 3600 * 1000),
    notAfter: new Date(now + CERT_YEARS * 365 * 24 * 3600 * 1000),
    keys: keys as unknown as GeneratorKeys,
    signingAlgorithm: ALGORITHM,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }).toString();
  return { keyPem, certPem: cert.toString('pem') };
}

/**
 * Loads the identity from `<stateDir>/identity`, making it on first start. The key file is owner-only;
 * the id is derived from the key, so it is stable for as long as the state directory is kept.
 */
export async function loadOrCreateIdentity(stateDir: string, commonName: string): Promise<Identity & { created: boolean }> {
  const dir = join(stateDir, 'identity');
  await ensurePrivateDir(dir);
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  let created = false;
  let keyPem: string;
  let certPem: string;
  try {
    [keyPem, certPem] = await Promise.all([readFile(keyPath, 'utf8'), readFile(certPath, 'utf8')]);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') {
      throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read identity in ${dir}`, { cause: err });
    }
    ({ keyPem, certPem } = await createIdentityFiles(commonName));
    await writeFileAtomic(certPath, certPem, 0o644);
    await writeFileAtomic(keyPath, keyPem, 0o600);
    created = true;
  }
  try {
    const privateKey = createPrivateKey(keyPem);
    return { signer: signerFromPrivateKey(privateKey), privateKey, keyPem, certPem, created };
  } catch (err) {
    throw new GroupcastError(ErrorCode.STATE_DIR, `identity in ${dir} is unreadable`, { cause: err });
  }
}
