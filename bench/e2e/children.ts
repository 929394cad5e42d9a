/**
 * The child processes of a benchmark script: started with their output watched for a ready line,
 * and tracked so the script can kill what is left when it ends.
 */
import { spawn, type ChildProcess } from 'node:child_process'

export interface Started {
  readonly child: ChildProcess
  readonly match: RegExpMatchArray
}

export class Children {
  readonly all: ChildProcess[] = []

  constructor(private readonly cwd: string) {}

  /** Starts `command` and resolves with the first match of `ready` in its stdout (stderr is kept for the error). */
  start(command: string, args: string[], env: Record<string, string>, ready: RegExp): Promise<Started> {
    const child = spawn(command, args, { cwd: this.cwd, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    this.all.push(child)
    let out = ''
    let err = ''
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
    return new Promise((resolve, reject) => {
      const onData = (c: Buffer): void => {
        out += c.toString()
        const m = ready.exec(out)
        if (m) {
          // keep draining so the child never blocks on a full pipe
          child.stdout!.off('data', onData)
          child.stdout!.on('data', () => {})
          resolve({ child, match: m })
        }
      }
      child.stdout!.on('data', onData)
      child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${err}${out}`)))
    })
  }

  /** SIGKILL to every child still running. */
  killAll(): void {
    for (const c of this.all) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  }
}
