/**
 * Address lists of the listener (LMTP_ALLOW_CIDRS, LMTP_PROXY_TRUSTED_CIDRS): CIDRs or single
 * addresses, IPv4 and IPv6. An IPv4 client seen on a dual-stack socket as `::ffff:a.b.c.d` matches
 * the IPv4 entries.
 */
import { BlockList, isIP } from 'node:net'

export class AddressSet {
  private readonly list = new BlockList()

  constructor(cidrs: readonly string[]) {
    for (const entry of cidrs) {
      const [address = '', bits] = entry.split('/')
      const family = isIP(address)
      if (family === 0) throw new TypeError(`not an address or CIDR: ${entry}`)
      const type = family === 4 ? 'ipv4' : 'ipv6'
      if (bits === undefined) this.list.addAddress(address, type)
      else this.list.addSubnet(address, Number(bits), type)
    }
  }

  has(address: string): boolean {
    const family = isIP(address)
    if (family === 0) return false
    return this.list.check(address, family === 4 ? 'ipv4' : 'ipv6')
  }
}
