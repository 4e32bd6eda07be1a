import { createPrivateKey, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { errnoCode, ErrorCode, GroupcastError } from '../errors.js';
import { signerFromPrivateKey, type Signer } from '../identity.js';
import { ensurePrivateDir, fsyncDir, writeFileAtomic } from './files.js';

type GeneratorKeys = Parameters<typeof X509.X509CertificateGenerator.createSelfSigned>[0]['keys'];

/**
 * The certificate library is needed only to make an identity, once per state directory. Loading it
 * costs more than everything else a daemon loads at start (~150 ms), so it is loaded only then.
 */
async function loadX509(): Promise<typeof X509> {
  await import('reflect-metadata');
  const x509 = await import('@peculiar/x509');
  // Typed against the DOM's Crypto, which Node's webcrypto implements; the one-argument set() makes it the default.
  (x509.cryptoProvider as { set(provider: typeof webcrypto): unknown }).set(webcrypto);
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

type IdentityFiles = { keyPem: string; certPem: string };

/** The key and certificate in `dir`; undefined while there is no identity there (yet). */
async function readIdentityFiles(dir: string): Promise<IdentityFiles | undefined> {
  try {
    const [keyPem, certPem] = await Promise.all([readFile(join(dir, 'key.pem'), 'utf8'), readFile(join(dir, 'cert.pem'), 'utf8')]);
    return { keyPem, certPem };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot read identity in ${dir}`, { cause: err });
  }
}

/**
 * Puts a new identity in place unless another process (a daemon's first start and `id` at the same
 * moment) got there first: both files are written in a private directory which is then renamed to
 * `dir`. A rename onto a directory that is not empty fails, so exactly one creator wins and every other
 * reads the winner's. Returns whether this one won.
 */
async function installIdentity(stateDir: string, dir: string, files: IdentityFiles): Promise<boolean> {
  const temp = join(stateDir, `.identity-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    await ensurePrivateDir(temp);
    await writeFileAtomic(join(temp, 'cert.pem'), files.certPem, 0o644);
    await writeFileAtomic(join(temp, 'key.pem'), files.keyPem, 0o600);
    try {
      await rename(temp, dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') return false;
      throw err;
    }
    await fsyncDir(stateDir);
    return true;
  } catch (err) {
    throw new GroupcastError(ErrorCode.STATE_DIR, `cannot create an identity in ${dir}`, { cause: err });
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
}

/**
 * Loads the identity from `<stateDir>/identity`, making it on first start. The key file is owner-only;
 * the id is derived from the key, so it is stable for as long as the state directory is kept.
 */
export async function loadOrCreateIdentity(stateDir: string, commonName: string): Promise<Identity & { created: boolean }> {
  const dir = join(stateDir, 'identity');
  let files = await readIdentityFiles(dir);
  let created = false;
  if (!files) {
    await ensurePrivateDir(stateDir);
    const made = await createIdentityFiles(commonName);
    created = await installIdentity(stateDir, dir, made);
    files = created ? made : await readIdentityFiles(dir);
    if (!files) {
      throw new GroupcastError(ErrorCode.STATE_DIR, `the identity in ${dir} is incomplete (key.pem or cert.pem missing): restore both from a backup, or remove the directory to make a new identity (a new id)`);
    }
  }
  try {
    const privateKey = createPrivateKey(files.keyPem);
    return { signer: signerFromPrivateKey(privateKey), privateKey, keyPem: files.keyPem, certPem: files.certPem, created };
  } catch (err) {
    throw new GroupcastError(ErrorCode.STATE_DIR, `identity in ${dir} is unreadable`, { cause: err });
  }
}
