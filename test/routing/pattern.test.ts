import t from 'tap'
import { isAppError } from '../../src/errors.js'
import { matchesPattern, parsePattern } from '../../src/routing/pattern.js'

t.test('patterns are classified and normalised', async (t) => {
  const cases: Array<[string, string, string]> = [
    // input, kind, normalised text
    ['support@example.com', 'exact', 'support@example.com'],
    ['Support@Example.COM', 'exact', 'support@example.com'],
    ['  sales@example.com.  ', 'exact', 'sales@example.com'],
    ['user+tag@example.com', 'exact', 'user+tag@example.com'],
    ['user+*@example.com', 'subaddress', 'user+*@example.com'],
    ['User+*@EXAMPLE.com', 'subaddress', 'user+*@example.com'],
    ['*@example.com', 'domain', '*@example.com'],
    ['*@*.example.com', 'subdomain', '*@*.example.com'],
    ['*@*.Example.Com.', 'subdomain', '*@*.example.com'],
    ['*', 'any', '*'],
    ['*@*', 'any', '*'],
    ['*@localhost', 'domain', '*@localhost'],
    ['jöns@exämple.de', 'exact', 'jöns@exämple.de'],
  ]
  for (const [input, kind, text] of cases) {
    const p = parsePattern(input)
    t.equal(p.kind, kind, `${input} is ${kind}`)
    t.equal(p.text, text, `${input} normalises to ${text}`)
  }
})

t.test('bad patterns are refused with a message naming the field and what was expected', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    ['', /^match: expected a recipient pattern/],
    ['example.com', /^match: expected a recipient pattern: an address/],
    ['user@', /^match: expected a domain name after "@"/],
    ['user@exa mple.com', /^match: expected a domain name/],
    ['user@-example.com', /^match: expected a domain name/],
    ['user@example..com', /^match: expected a domain name/],
    ['us*er@example.com', /^match: expected a local part/],
    ['*user@example.com', /^match: expected a local part/],
    ['user+*+*@example.com', /^match: expected a local part without "\*" or "\+" before "\+\*"/],
    ['+*@example.com', /^match: expected a local part without/],
    ['a+b+*@example.com', /^match: expected a local part without/],
    ['user@*.example.com', /^match: expected "\*" before "@\*\."/],
    ['*@ex*ample.com', /^match: expected a domain name/],
    ['*@*.*.example.com', /^match: expected a domain name/],
    ['two words@example.com', /^match: expected a local part/],
    [42, /^match: expected a recipient pattern.*got 42$/],
  ]
  for (const [input, message] of cases) {
    t.throws(() => parsePattern(input), message, JSON.stringify(input))
    try {
      parsePattern(input)
    } catch (err) {
      t.ok(isAppError(err, 'ROUTE_ERR_INVALID'), `${JSON.stringify(input)} gives ROUTE_ERR_INVALID`)
      t.match((err as Error).message, `got ${JSON.stringify(input)}`, 'the message quotes the input')
    }
  }
  t.throws(() => parsePattern('nope', 'routes[1].match'), /^routes\[1\]\.match: expected/, "the field name is the caller's")
})

t.test('what each kind of pattern matches', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['support@example.com', 'support@example.com', true],
    ['support@example.com', 'SUPPORT@EXAMPLE.COM', true],
    ['support@example.com', 'support@example.com.', true],
    ['support@example.com', 'support+x@example.com', false],
    ['support@example.com', 'support@sub.example.com', false],
    ['support@example.com', 'other@example.com', false],
    ['user+*@example.com', 'user@example.com', true],
    ['user+*@example.com', 'user+@example.com', true],
    ['user+*@example.com', 'user+news@example.com', true],
    ['user+*@example.com', 'User+News+Extra@Example.com', true],
    ['user+*@example.com', 'username@example.com', false],
    ['user+*@example.com', 'user+news@other.com', false],
    ['user+*@example.com', 'xuser+news@example.com', false],
    ['*@example.com', 'anyone@example.com', true],
    ['*@example.com', 'a+b@EXAMPLE.COM', true],
    ['*@example.com', 'anyone@sub.example.com', false],
    ['*@example.com', 'anyone@notexample.com', false],
    ['*@*.example.com', 'a@sub.example.com', true],
    ['*@*.example.com', 'a@deep.sub.example.com', true],
    ['*@*.example.com', 'a@example.com', false],
    ['*@*.example.com', 'a@badexample.com', false],
    ['*', 'anyone@anywhere.org', true],
    ['*', 'postmaster', true],
  ]
  for (const [pattern, address, expected] of cases) {
    t.equal(matchesPattern(parsePattern(pattern), address), expected, `${pattern} ${expected ? 'matches' : 'does not match'} ${address}`)
  }
})
