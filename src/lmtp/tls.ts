/**
 * The listener's TLS credentials: certificate, key and (for client certificates) the client CA,
 * read from files. A handshake asks for the current context; at most once per check interval the
 * files are looked at again (stat: inode, size, modification time), and when they changed a new
 * context is built for the handshakes that follow. So a rotated certificate (cert-manager
 * replacing the Secret mounted in the pod) is picked up without a restart. If the new files do not
 * form a valid pair yet (the key written before the certificate, say), the previous context stays
 * in use and the files are tried again at the next check.
 */
import { statSync, readFileSync } from 'node:fs'
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'

export type ClientCertMode = 'off' | 'request' | 'require'

export interface TlsOptions {
  readonly certFile: string
  readonly keyFile: string
  /** CA bundle that verifies client certificates; null: client certificates are not asked for. */
  readonly clientCaFile: string | null
  /** `request`: ask, record the subject of a verified one; `require`: refuse a session without one. */
  readonly clientCert: ClientCertMode
  /** MAIL before STARTTLS gets 530 5.7.0. */
  readonly required: boolean
}

/** Which of the files is wrong, and why. */
export class TlsFileError extends Error {
  constructor(
    readonly file: 'cert' | 'key' | 'ca',
    message: string,
  ) {
    super(message)
    this.name = 'TlsFileError'
  }
}

export interface TlsMaterial {
  readonly cert: Buffer
  readonly key: Buffer
  readonly ca: Buffer | null
  /** The leaf certificate (for logs: subject, expiry, fingerprint). */
  readonly leaf: X509Certificate
}

function read(path: string, file: TlsFileError['file']): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new TlsFileError(file, `cannot read ${path}: ${(err as Error).message}`)
  }
}

/** Reads the files and checks them: PEM certificate(s), a private key that matches, CA certificates. */
export function readTlsFiles(options: Pick<TlsOptions, 'certFile' | 'keyFile' | 'clientCaFile'>): TlsMaterial {
  const cert = read(options.certFile, 'cert')
  const key = read(options.keyFile, 'key')
  const ca = options.clientCaFile === null ? null : read(options.clientCaFile, 'ca')
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(cert)
  } catch (err) {
    throw new TlsFileError('cert', `${options.certFile} holds no PEM certificate (${(err as Error).message})`)
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    throw new TlsFileError('key', `${options.keyFile} holds no unencrypted PEM private key (${(err as Error).message})`)
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new TlsFileError('key', `${options.keyFile} is not the key of the certificate in ${options.certFile}`)
  if (ca !== null) {
    if (!ca.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) throw new TlsFileError('ca', `${options.clientCaFile} holds no PEM certificate`)
    try {
      new X509Certificate(ca)
    } catch (err) {
      throw new TlsFileError('ca', `${options.clientCaFile} holds no valid PEM certificate (${(err as Error).message})`)
    }
  }
  try {
    createSecureContext({ cert, key, ca: ca ?? undefined })
  } catch (err) {
    throw new TlsFileError('cert', `${options.certFile} and ${options.keyFile} cannot be used for TLS (${(err as Error).message})`)
  }
  return { cert, key, ca, leaf }
}

function signature(paths: readonly string[]): string {
  return paths
    .map((p) => {
      try {
        const s = statSync(p)
        return `${s.ino}:${s.size}:${s.mtimeMs}`
      } catch {
        return 'missing'
      }
    })
    .join('|')
}

export class TlsCredentials {
  private current: SecureContext
  private seen: string
  private checkedAt: number
  private readonly paths: string[]

  constructor(
    readonly options: TlsOptions,
    private readonly log: Logger,
    private readonly checkIntervalMs = 1000,
  ) {
    this.paths = [options.certFile, options.keyFile, ...(options.clientCaFile === null ? [] : [options.clientCaFile])]
    this.seen = signature(this.paths)
    const material = readTlsFiles(options)
    this.current = this.build(material)
    this.checkedAt = Date.now()
    this.describe(material, 'TLS certificate loaded')
  }

  /** The context for a new handshake, rebuilt first when the files changed on disk. */
  context(): SecureContext {
    const now = Date.now()
    if (now - this.checkedAt >= this.checkIntervalMs) {
      this.checkedAt = now
      const sig = signature(this.paths)
      if (sig !== this.seen) {
        this.seen = sig
        try {
          const material = readTlsFiles(this.options)
          this.current = this.build(material)
          this.describe(material, 'TLS certificate reloaded')
        } catch (err) {
          // Keep serving with the previous context; the next change of the files is tried again.
          this.log.warn({ err: (err as Error).message }, 'TLS files changed but cannot be used yet; keeping the previous certificate')
        }
      }
    }
    return this.current
  }

  private build(material: TlsMaterial): SecureContext {
    return createSecureContext({
      cert: material.cert,
      key: material.key,
      ca: material.ca ?? undefined,
      minVersion: 'TLSv1.2',
    })
  }

  private describe(material: TlsMaterial, msg: string): void {
    const { leaf } = material
    this.log.info({ subject: leaf.subject.replace(/\n/g, ', '), validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 }, msg)
  }
}

/**
 * Whether the client certificate of a server-side TLS socket made with `new TLSSocket(socket,
 * { isServer: true, requestCert: true })` passed verification against the context's CA. Node
 * judges it only for the sockets a `tls.Server` accepts (OpenSSL itself fails the handshake only
 * when a required certificate is missing, never for an untrusted one), so this asks the socket's
 * TLS handle the same question `tls.Server` asks it. A handle without that method counts as not
 * verified: the check fails closed.
 */
export function peerVerified(secure: TLSSocket): { verified: boolean; reason: string | null } {
  const handle = (secure as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle
  if (typeof handle?.verifyError !== 'function') return { verified: false, reason: 'the TLS handle cannot report certificate verification' }
  const error = handle.verifyError()
  if (error) return { verified: false, reason: error.code ?? error.message }
  return secure.getPeerX509Certificate() === undefined ? { verified: false, reason: 'no client certificate' } : { verified: true, reason: null }
}

/** A certificate subject as an RFC 4514 string: most specific attribute first, special characters escaped. */
export function distinguishedName(subject: Readonly<Record<string, string | readonly string[] | undefined>> | undefined): string | null {
  if (!subject) return null
  const parts: string[] = []
  for (const [type, value] of Object.entries(subject)) {
    if (value === undefined) continue
    for (const v of Array.isArray(value) ? value : [value as string]) parts.push(`${type}=${escapeDnValue(v)}`)
  }
  return parts.length === 0 ? null : parts.reverse().join(',')
}

function escapeDnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ')
    .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}
