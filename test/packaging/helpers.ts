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

export interface ChartEnvironment {
  /** Variables with literal values: the ConfigMap's data and the Deployment's `value:` entries. */
  readonly env: Record<string, string>
  /** Variables the Deployment takes from the Secret (`valueFrom`). */
  readonly fromSecret: string[]
}

/**
 * The container environment the chart sets for `values`, read from templates/configmap.yaml
 * (each data line `NAME: {{ .Values.path | fn ... }}`) and the `env:` list of
 * templates/deployment.yaml (with its `{{- if .Values.path }}` blocks). Throws on any line it
 * cannot evaluate.
 */
export function chartEnvironment(values: Values): ChartEnvironment {
  const env: Record<string, string> = {}
  const configmap = readFileSync(join(CHART, 'templates', 'configmap.yaml'), 'utf8')
  const data = configmap.split(/^data:\s*$/m)[1]
  if (data === undefined) throw new Error('configmap.yaml has no data: section')
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
  // Entries may sit inside `{{- if .Values.path }}` ... `{{- end }}`: kept when the value is truthy
  // as Go templates judge it. Values may hold `{{ .Values.path }}` expressions.
  const conditions: boolean[] = []
  let entry: { name: string; body: string[]; active: boolean } | null = null
  const flush = (): void => {
    if (entry === null || !entry.active) return void (entry = null)
    const body = entry.body.join('\n')
    const literal = /^\s*value: (.*)$/m.exec(body)
    if (literal) {
      const text = (literal[1] ?? '').replace(/\{\{-? (.+?) -?\}\}/g, (_, expression: string) => evaluatePipeline(expression, values, false))
      env[entry.name] = parseYaml(text) as string
    } else if (/^\s*valueFrom:/m.test(body)) fromSecret.push(entry.name)
    else throw new Error(`deployment.yaml: env ${entry.name} has neither value nor valueFrom`)
    entry = null
  }
  for (const line of (block[2] ?? '').split('\n')) {
    const text = line.trim()
    if (text === '' || text.startsWith('#')) continue
    const condition = /^\{\{-? (if|with) \.Values\.([\w.]+) -?\}\}$/.exec(text)
    if (condition) {
      flush()
      const value = valueAt(values, condition[2] ?? '')
      if (condition[1] === 'with' && truthy(value)) throw new Error(`deployment.yaml: cannot evaluate the env entries of a non-empty ${text}`)
      conditions.push(truthy(value))
      continue
    }
    if (/^\{\{-? end -?\}\}$/.test(text)) {
      flush()
      conditions.pop()
      continue
    }
    const name = /^- name: (\S+)$/.exec(text)
    if (name) {
      flush()
      entry = { name: name[1] ?? '', body: [], active: conditions.every(Boolean) }
      continue
    }
    if (/^\{\{/.test(text)) {
      if (conditions.every(Boolean)) throw new Error(`deployment.yaml: cannot evaluate ${JSON.stringify(text)} in the env list`)
      continue
    }
    entry?.body.push(line)
  }
  flush()
  return { env, fromSecret }
}

/** Names of the environment variables src/config.ts reads. */
export function configVariables(): Set<string> {
  const source = readText('src', 'config.ts')
  return new Set([...source.matchAll(/\benv, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1] as string))
}
