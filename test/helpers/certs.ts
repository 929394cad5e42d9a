/** Certificates for TLS tests, made by the openssl command line in a temp dir (removed at teardown). */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface Pki {
  readonly dir: string
  /** Makes a CA; returns the paths of its certificate and key. */
  ca(name: string): { cert: string; key: string }
  /**
   * Makes a certificate signed by `ca` (`serverAuth` with the names as subjectAltName, or
   * `clientAuth`, or both: a Redis server is also a client of its replicas and cluster peers);
   * returns the paths of the certificate and its key.
   */
  leaf(
    name: string,
    ca: { cert: string; key: string },
    options: { cn: string; usage: 'server' | 'client' | 'both'; dns?: string[]; ip?: string[]; o?: string },
  ): {
    cert: string
    key: string
  }
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

export function pki(t: { teardown: (fn: () => unknown) => void }): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-pki-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return {
    dir,
    ca(name) {
      const cert = join(dir, `${name}.crt`)
      const key = join(dir, `${name}.key`)
      openssl([
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '2',
        '-subj',
        `/O=Test/CN=${name}`,
        '-keyout',
        key,
        '-out',
        cert,
      ])
      return { cert, key }
    },
    leaf(name, ca, options) {
      const cert = join(dir, `${name}.crt`)
      const key = join(dir, `${name}.key`)
      const csr = join(dir, `${name}.csr`)
      const ext = join(dir, `${name}.ext`)
      const subject = `${options.o ? `/O=${options.o}` : ''}/CN=${options.cn}`
      openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', subject, '-keyout', key, '-out', csr])
      const names = [...(options.dns ?? []).map((d) => `DNS:${d}`), ...(options.ip ?? []).map((i) => `IP:${i}`)]
      writeFileSync(
        ext,
        [
          'basicConstraints = CA:FALSE',
          'keyUsage = digitalSignature',
          `extendedKeyUsage = ${{ server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[options.usage]}`,
          ...(names.length > 0 ? [`subjectAltName = ${names.join(',')}`] : []),
        ].join('\n') + '\n',
      )
      openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', cert])
      return { cert, key }
    },
  }
}
