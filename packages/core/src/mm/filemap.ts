/**
 * Files and their page cache (`struct address_space`, mm/filemap.c) over an in-memory file store:
 * each file has a size, a backing store (its "disk") and a page cache mapping file page index → frame.
 * A shmem file (`shmem_file_setup`, mm/shmem.c) backs MAP_SHARED|MAP_ANONYMOUS mappings.
 *
 * Simplification: shmem pages are written back to the shmem object's own backing store on reclaim
 * instead of to swap slots; contents and visibility are the same.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import { PageStore } from './page-store.js';
import type { Vma } from './vma.js';

/** One file (inode + address_space). */
export class SimFile {
  /** Page cache (`i_pages`): file page index → pfn. */
  readonly pageCache = new Map<number, number>();
  /** VMAs mapping this file (`i_mmap`), walked by the reverse map and truncate. */
  readonly mappings = new Set<Vma>();
  /** The file's contents on "disk". */
  readonly backing = new PageStore(16, true);
  /** Removed from the file store (unlinked); open mappings keep it alive. */
  unlinked = false;

  constructor(
    /** Id, also the `owner` of its page-cache frames (1..65535). */
    readonly id: number,
    /** Path in the file store; empty for shmem objects. */
    readonly name: string,
    /** Size in bytes (`i_size`). */
    public size: number,
    /** A shmem object (anonymous shared memory). */
    readonly shmem: boolean,
  ) {}
}

/** Largest number of files a store can hold at once (file ids are 16-bit frame owners). */
export const MAX_FILES = 0xfffe;

/** The in-memory filesystem: named files and anonymous shmem objects. */
export class FileStore {
  private readonly byId: (SimFile | undefined)[] = [undefined];
  private readonly byName = new Map<string, SimFile>();
  private readonly freeIds: number[] = [];

  /** The file with this id. */
  get(id: number): SimFile | undefined {
    return this.byId[id];
  }

  /** The file with this path, if it exists. */
  lookup(name: string): SimFile | undefined {
    return this.byName.get(name);
  }

  /** Files that exist (named and shmem). */
  get count(): number {
    return this.byId.length - 1 - this.freeIds.length;
  }

  private newId(): number {
    const id = this.freeIds.pop() ?? this.byId.length;
    if (id > MAX_FILES) throw new HmmError('ENOSPC', `file store is full (${MAX_FILES} files)`);
    return id;
  }

  /** Creates an empty named file (`open(O_CREAT|O_EXCL)`); EEXIST if the path exists. */
  create(name: string, size = 0): SimFile {
    if (name.length === 0) throw new HmmError('ENOENT', 'file name must not be empty');
    if (this.byName.has(name)) throw new HmmError('EEXIST', `file ${name} already exists`);
    if (!Number.isSafeInteger(size) || size < 0)
      throw new HmmError('EINVAL', `file size ${size} is not a size`);
    const f = new SimFile(this.newId(), name, size, false);
    this.byId[f.id] = f;
    this.byName.set(name, f);
    return f;
  }

  /** Creates an anonymous shmem object of `size` bytes (`shmem_zero_setup`). */
  createShmem(size: number): SimFile {
    const f = new SimFile(this.newId(), '', size, true);
    this.byId[f.id] = f;
    return f;
  }

  /**
   * Removes a file's name (`unlink`). Its data lives on while mappings or page-cache pages remain;
   * {@link release} drops it when the last mapping goes.
   */
  unlink(name: string): void {
    const f = this.byName.get(name);
    if (f === undefined) throw new HmmError('ENOENT', `no file ${name}`);
    this.byName.delete(name);
    f.unlinked = true;
  }

  /** Forgets a file that is unlinked (or shmem) and has no mapping and no cached page. */
  release(f: SimFile): boolean {
    if ((!f.unlinked && !f.shmem) || f.mappings.size > 0 || f.pageCache.size > 0) return false;
    if (this.byId[f.id] === f) {
      this.byId[f.id] = undefined;
      this.freeIds.push(f.id);
      f.backing.truncate(0);
    }
    return true;
  }
}
