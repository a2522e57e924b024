/**
 * Errno-coded errors. Every failure the SDK reports is an {@link HmmError} whose `errno` is the
 * kernel's code (positive, as in `include/uapi/asm-generic/errno-base.h`) and whose message says
 * which contract was broken and what to do about it.
 *
 * @module
 */

/** The errno values the SDK uses, with the kernel's numbers. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  EDEADLK: 35,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
} as const;

/** Name of an errno, e.g. `'EINVAL'`. */
export type ErrnoName = keyof typeof Errno;

/** Signal a CPU access raises instead of returning an error (`SIGSEGV`: no mapping or no permission; `SIGBUS`: beyond end of file). */
export type FaultSignal = 'SIGSEGV' | 'SIGBUS';

/** Extra, machine-readable detail carried by an error. */
export interface HmmErrorDetail {
  /** Virtual address the failure concerns, if any. */
  readonly address?: number;
  /** Signal a CPU access would have received (SIGSEGV-like typed error). */
  readonly signal?: FaultSignal;
  /** `si_code`-like cause of a signal: `MAPERR` (no mapping) or `ACCERR` (permission). */
  readonly sigCode?: 'MAPERR' | 'ACCERR' | 'ADRERR';
  /** Kernel function whose contract this error reflects, e.g. `'mm/gup.c:unpin_user_page'`. */
  readonly kernelRef?: string;
}

/**
 * The one error class of the SDK. `code` is the errno name, `errno` its number.
 * Bad input never leaves state half-changed: an operation that throws this did nothing.
 */
export class HmmError extends Error {
  override readonly name = 'HmmError';
  readonly code: ErrnoName;
  readonly errno: number;
  readonly address: number | undefined;
  readonly signal: FaultSignal | undefined;
  readonly sigCode: 'MAPERR' | 'ACCERR' | 'ADRERR' | undefined;
  readonly kernelRef: string | undefined;

  constructor(code: ErrnoName, message: string, detail: HmmErrorDetail = {}) {
    super(`${code}: ${message}`);
    this.code = code;
    this.errno = Errno[code];
    this.address = detail.address;
    this.signal = detail.signal;
    this.sigCode = detail.sigCode;
    this.kernelRef = detail.kernelRef;
  }
}

/** True if `e` is an {@link HmmError}, optionally with the given code. */
export function isHmmError(e: unknown, code?: ErrnoName): e is HmmError {
  return e instanceof HmmError && (code === undefined || e.code === code);
}

/** Formats an address as the kernel prints it: `0x` and lower-case hex. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
