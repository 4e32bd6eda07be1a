import { spawn } from 'node:child_process';

/**
 * Runs node with `args` in a pseudo-terminal (script(1)), as an operator's shell would, sized to
 * `columns` with stty when given (a pty made without one reports no width). Resolves with the exit
 * code and everything written to the terminal.
 */
export function onTerminal(args: string[], options: { columns?: number; timeoutMs?: number } = {}): Promise<{ code: number | null; output: string }> {
  const { columns, timeoutMs = 60_000 } = options;
  const quote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
  const command = `${columns === undefined ? '' : `stty cols ${columns} rows 50 && exec `}${[process.execPath, ...args].map(quote).join(' ')}`;
  return new Promise((resolve, reject) => {
    const proc = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    proc.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no exit within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    // 'close': after the output is read, which 'exit' may come before.
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
