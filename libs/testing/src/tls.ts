import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeOnExit } from './reaper';

/** A self-signed certificate for 127.0.0.1 and localhost and its key (PEM files), and the certificate's text. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** The certificate (PEM): the CA a client trusts to reach a server that presents it. */
  cert: string;
}

/**
 * A self-signed certificate (RSA 2048, valid 2 days) for 127.0.0.1 and localhost, made by `openssl req -x509` in a
 * temp dir removed at exit. It is its own CA: a client takes `cert` as its `ca`.
 */
export function selfSignedTls(): TlsFiles {
  const dir = mkdtempSync(join(tmpdir(), 'tally-tls-'));
  removeOnExit(dir);
  const [certFile, keyFile] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
  const subject = ['-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'];
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', ...subject, '-keyout', keyFile, '-out', certFile],
    {
      stdio: 'pipe',
    },
  );
  return { certFile, keyFile, cert: readFileSync(certFile, 'utf8') };
}

/**
 * redis-server's TLS settings (a config file's lines; `--` before each for its command line): TLS on `port` with the
 * certificate, clients not asked for one of their own, and TLS to the servers it connects to (a replica to its
 * master, a Sentinel to the servers it monitors).
 */
export function redisTlsConfig(tls: TlsFiles, port: number): string[] {
  return [
    `tls-port ${port}`,
    `tls-cert-file ${tls.certFile}`,
    `tls-key-file ${tls.keyFile}`,
    `tls-ca-cert-file ${tls.certFile}`,
    'tls-auth-clients no',
    'tls-replication yes',
  ];
}
