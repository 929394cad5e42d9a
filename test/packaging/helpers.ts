/**
 * Readers for the packaging files (Dockerfile, .dockerignore, Helm chart) shared by the tests in
 * this folder. No Docker engine or helm binary exists where tests run, so these read the files the
 * way those tools do, for the small subset of their syntax the project's files use, and throw on
 * anything outside that subset rather than guess.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const CHART = join(ROOT, 'helm', 'lmtp-webhook')

export function readText(...path: string[]): string {
  return readFileSync(join(ROOT, ...path), 'utf8')
}

export function readYaml(...path: string[]): unknown {
  return parseYaml(readText(...path))
}

/** Every file below `dir` (absolute), as paths relative to the repository root. */
export function listFiles(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const full = join(dir, name)
    if (statSync(full).isDirectory()) out.push(...listFiles(full))
    else out.push(relative(ROOT, full))
  }
  return out
}

// ---- Dockerfile ------------------------------------------------------------------------------

export interface Instruction {
  /** Upper-cased keyword: FROM, RUN, COPY... */
  readonly keyword: string
  /** Everything after the keyword, continuation lines joined. */
  readonly args: string
  readonly line: number
}

export interface Stage {
  /** Image reference of FROM. */
  readonly from: string
  /** `AS` name, or null. */
  readonly name: string | null
  readonly instructions: Instruction[]
}

/** Splits a Dockerfile into stages of instructions (comments dropped, `\` continuations joined). */
export function parseDockerfile(text: string): Stage[] {
  const instructions: Instruction[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let line = lines[i] ?? ''
    if (/^\s*(#.*)?$/.test(line)) continue
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      i++
      const next = lines[i] ?? ''
      if (/^\s*#/.test(next)) continue
      line = line.replace(/\\\s*$/, ' ') + next.trim()
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot read ${JSON.stringify(line)}`)
    instructions.push({ keyword: (m[1] ?? '').toUpperCase(), args: (m[2] ?? '').trim(), line: start + 1 })
  }
  const stages: Stage[] = []
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      if (!m) throw new Error(`Dockerfile line ${ins.line}: cannot read FROM ${ins.args}`)
      stages.push({ from: m[1] ?? '', name: m[2] ?? null, instructions: [] })
    } else if (stages.length > 0) {
      stages[stages.length - 1]?.instructions.push(ins)
    }
  }
  return stages
}

/** Arguments of an exec-form (`["a", "b"]`) or shell-form instruction, as words. */
export function words(args: string): string[] {
  const trimmed = args.trim()
  if (trimmed.startsWith('[')) return JSON.parse(trimmed) as string[]
  return trimmed.split(/\s+/)
}

// ---- .dockerignore ---------------------------------------------------------------------------

interface IgnoreRule {
  readonly negate: boolean
  readonly pattern: RegExp
}

function globToRegExp(glob: string): RegExp {
  let out = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string
    if (c === '*') {
      if (glob[i + 1] === '*') {
        // `**/` matches any number of directories, a trailing `**` anything
        i++
        if (glob[i + 1] === '/') {
          i++
          out += '(?:.*/)?'
        } else {
          out += '.*'
        }
      } else {
        out += '[^/]*'
      }
    } else if (c === '?') {
      out += '[^/]'
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
    }
  }
  return new RegExp(`^${out}$`)
}

/**
 * Builds the predicate Docker applies to the build context: rules in order, the last matching
 * one wins, `!` re-includes, and a rule that matches a directory covers everything below it.
 */
export function dockerignore(text: string): (path: string) => boolean {
  const rules: IgnoreRule[] = []
  for (const raw of text.split('\n')) {
    let line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const negate = line.startsWith('!')
    if (negate) line = line.slice(1).trim()
    line = line.replace(/^\/+/, '').replace(/\/+$/, '')
    rules.push({ negate, pattern: globToRegExp(line) })
  }
  return (path: string): boolean => {
    const parts = path.split('/')
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'))
    let ignored = false
    for (const rule of rules) {
      if (prefixes.some((p) => rule.pattern.test(p))) ignored = !rule.negate
    }
    return ignored
  }
}

// ---- Helm chart ------------------------------------------------------------------------------

export type Values = Record<string, unknown>

export function chartValues(): Values {
  return parseYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Values
}

/** Values with `overrides` merged in the way `helm --set`/`-f` merges maps (lists replace). */
export function withOverrides(values: Values, overrides: Values): Values {
  const out: Values = { ...values }
  for (const [key, value] of Object.entries(overrides)) {
    const base = out[key]
    out[key] = isMap(base) && isMap(value) ? withOverrides(base, value) : value
  }
  return out
}

function isMap(v: unknown): v is Values {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The value at a dotted path below `.Values`; throws naming the first missing segment. */
export function valueAt(values: Values, path: string): unknown {
  let current: unknown = values
  const seen: string[] = []
  for (const segment of path.split('.')) {
    if (!isMap(current) || !(segment in current)) throw new Error(`.Values.${[...seen, segment].join('.')} is not in values.yaml`)
    current = current[segment]
    seen.push(segment)
  }
  return current
}

/** Go/sprig functions the chart's ConfigMap uses, applied as pipeline stages. */
function applyFunction(stage: string, input: unknown): unknown {
  const m = /^(\w+)(?:\s+"((?:[^"\\]|\\.)*)")?$/.exec(stage.trim())
  if (!m) throw new Error(`unsupported pipeline stage ${JSON.stringify(stage)}`)
  const [, name, arg] = m
  const text = arg === undefined ? undefined : (JSON.parse(`"${arg}"`) as string)
  switch (name) {
    case 'quote':
      return String(input)
    case 'int': {
      const n = Number(input)
      if (!Number.isFinite(n)) throw new Error(`int of ${JSON.stringify(input)}`)
      return Math.trunc(n)
    }
    case 'join':
      if (!Array.isArray(input) || text === undefined) throw new Error(`join needs a list and a separator, got ${JSON.stringify(input)}`)
      return input.map(String).join(text)
    case 'printf':
      if (text === undefined) throw new Error('printf needs a format')
      return text.replace(/%[dsv]/, String(input))
    default:
      throw new Error(`unsupported template function ${name}`)
  }
}

function evaluatePipeline(expression: string, values: Values, mustQuote = true): string {
  const [head, ...stages] = expression.split('|')
  const m = /^\s*\.Values\.([\w.]+)\s*$/.exec(head ?? '')
  if (!m) throw new Error(`unsupported template expression ${JSON.stringify(expression)}`)
  let value = valueAt(values, m[1] ?? '')
  for (const stage of stages) value = applyFunction(stage, value)
  if (typeof value !== 'string' && mustQuote) throw new Error(`${expression} does not end in a string (add | quote)`)
  return String(value)
}

/** Truthiness as Go templates judge it: false, 0, "", nil and empty lists and maps are false. */
function truthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === '') return false
  if (Array.isArray(value)) return value.length > 0
  if (isMap(value)) return Object.keys(value).length > 0
  return true
}

/**
 * A condition of the chart's own-line `if`/`with` actions: `.Values.path`, a quoted string, and
 * `eq`, `ne`, `not`, `and`, `or`, `empty` applied to those, parenthesised as Go templates do.
 */
function evaluateCondition(expression: string, values: Values): unknown {
  const tokens = expression.match(/\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+/g) ?? []
  let i = 0
  const fail = (): never => {
    throw new Error(`unsupported template condition ${JSON.stringify(expression)}`)
  }
  const arg = (): unknown => {
    const token = tokens[i++] ?? fail()
    if (token === '(') {
      const value = call()
      if (tokens[i++] !== ')') fail()
      return value
    }
    if (token.startsWith('"')) return JSON.parse(token) as string
    if (token.startsWith('.Values.')) return valueAt(values, token.slice('.Values.'.length))
    return fail()
  }
  const call = (): unknown => {
    const fn = tokens[i]
    if (fn === undefined) return fail()
    if (!['eq', 'ne', 'not', 'and', 'or', 'empty'].includes(fn)) return arg()
    i++
    const args: unknown[] = []
    while (i < tokens.length && tokens[i] !== ')') args.push(arg())
    switch (fn) {
      case 'eq':
      case 'ne':
        if (args.length !== 2) fail()
        return (args[0] === args[1]) === (fn === 'eq')
      case 'not':
      case 'empty':
        if (args.length !== 1) fail()
        return !truthy(args[0])
      case 'and':
        return args.every(truthy)
      default:
        return args.some(truthy)
    }
  }
  const value = call()
  if (i !== tokens.length) fail()
  return value
}

/**
 * Keeps the lines of the `if`/`else`/`with` branches the values take, in a template section whose
 * actions stand on lines of their own; drops the action lines. Throws on any other action line.
 */
export function selectBranches(text: string, values: Values): string {
  const out: string[] = []
  const stack: { taking: boolean; taken: boolean }[] = []
  const active = (): boolean => stack.every((f) => f.taking)
  for (const line of text.split('\n')) {
    const m = /^\s*\{\{-?\s*(if|else if|else|end|with)\b\s*(.*?)\s*-?\}\}\s*$/.exec(line)
    if (!m) {
      if (/^\s*\{\{-?\s*(range|define|block)\b/.test(line)) throw new Error(`unsupported action line ${JSON.stringify(line)}`)
      if (active()) out.push(line)
      continue
    }
    const [, action, condition = ''] = m
    if (action === 'if' || action === 'with') {
      const taking = truthy(evaluateCondition(condition, values))
      stack.push({ taking, taken: taking })
    } else if (action === 'else if' || action === 'else') {
      const frame =
        stack[stack.length - 1] ??
        (() => {
          throw new Error(`else without if: ${line}`)
        })()
      const taking = !frame.taken && (action === 'else' || truthy(evaluateCondition(condition, values)))
      frame.taking = taking
      frame.taken ||= taking
    } else if (stack.pop() === undefined) throw new Error(`end without if: ${line}`)
  }
  if (stack.length > 0) throw new Error('an if/with without its end')
  return out.join('\n')
}

export interface ChartEnvironment {
  /** Variables with literal values: the ConfigMap's data and the Deployment's `value:` entries. */
  readonly env: Record<string, string>
  /** Variables the Deployment takes from the Secret (`valueFrom`). */
  readonly fromSecret: string[]
}

/**
 * The container environment the chart sets for `values`, read from templates/configmap.yaml
 * (each data line `NAME: {{ .Values.path | fn ... }}`, within the `if` branches the values take)
 * and the `env:` list of templates/deployment.yaml (within its `if`/`with` branches too; a value
 * may hold `{{ .Values.path }}` expressions). Throws on any line it cannot evaluate.
 */
export function chartEnvironment(values: Values): ChartEnvironment {
  const env: Record<string, string> = {}
  const configmap = readFileSync(join(CHART, 'templates', 'configmap.yaml'), 'utf8')
  const section = configmap.split(/^data:\s*$/m)[1]
  if (section === undefined) throw new Error('configmap.yaml has no data: section')
  const data = selectBranches(section, values)
  for (const line of data.split('\n')) {
    if (line.trim() === '') continue
    const m = /^ {2}([A-Z][A-Z0-9_]*): \{\{-? (.+?) -?\}\}\s*$/.exec(line)
    if (!m) throw new Error(`configmap.yaml: cannot evaluate ${JSON.stringify(line)}`)
    env[m[1] ?? ''] = evaluatePipeline(m[2] ?? '', values)
  }

  const fromSecret: string[] = []
  const deployment = readFileSync(join(CHART, 'templates', 'deployment.yaml'), 'utf8')
  const block = /^( +)env:\n((?:\1 .*\n)+)/m.exec(deployment)
  if (!block) throw new Error('deployment.yaml has no env: list')
  const entries = selectBranches(block[2] ?? '', values)
    .split(/^\s*- name: /m)
    .slice(1)
  for (const entry of entries) {
    const [first, ...rest] = entry.split('\n')
    const name = (first ?? '').trim()
    const body = rest.join('\n')
    const literal = /^\s*value: (.*)$/m.exec(body)
    // A value may hold `{{ .Values.path }}` expressions.
    if (literal) {
      const text = (literal[1] ?? '').replace(/\{\{-? (.+?) -?\}\}/g, (_, expression: string) => evaluatePipeline(expression, values, false))
      env[name] = parseYaml(text) as string
    } else if (/^\s*valueFrom:/m.test(body)) fromSecret.push(name)
    else throw new Error(`deployment.yaml: env ${name} has neither value nor valueFrom`)
  }
  return { env, fromSecret }
}

/** Names of the environment variables src/config.ts reads. */
export function configVariables(): Set<string> {
  const source = readText('src', 'config.ts')
  return new Set([...source.matchAll(/\benv, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1] as string))
}
