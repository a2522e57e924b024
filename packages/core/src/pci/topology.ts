/**
 * PCI topology for peer-to-peer DMA (drivers/pci/p2pdma.c: `calc_map_type_and_dist`,
 * `host_bridge_whitelist`, `pci_p2pdma_distance_many`).
 *
 * A tree of host bridges (root complexes), switches and endpoints. Whether two endpoints can reach
 * each other directly, and how far apart they are, follows the kernel's three outcomes:
 * - **BUS_ADDR**: both sit below a common switch and no switch on the way redirects peer traffic
 *   upstream (ACS): the DMA uses bus addresses and never reaches the root complex;
 * - **THRU_HOST_BRIDGE**: the traffic crosses the root complex, which the host bridges' allow-list
 *   must permit (one bridge that allows peer traffic between its own ports, or two that allow it
 *   across roots, as some Xeon and every AMD Zen host bridge do);
 * - **NOT_SUPPORTED**: otherwise; the exporter must fall back to system memory.
 *
 * The distance is the number of links from each endpoint up to the common upstream node; crossing
 * host bridges adds the hops between the roots.
 *
 * @module
 */
import { HmmError } from '../errors/errno.js';
import type { CostModel } from '../sim/cost-model.js';

/** `enum pci_p2pdma_map_type` (without UNKNOWN, which is the kernel's cache-miss value). */
export const P2pMapType = {
  /** No peer path: fall back to system memory. */
  NOT_SUPPORTED: 0,
  /** Through a common switch, by bus address (`PCI_P2PDMA_MAP_BUS_ADDR`). */
  BUS_ADDR: 1,
  /** Through the root complex (`PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`). */
  THRU_HOST_BRIDGE: 2,
} as const;
/** One of {@link P2pMapType}. */
export type P2pMapTypeId = (typeof P2pMapType)[keyof typeof P2pMapType];

/** Names of {@link P2pMapType} values, for messages and traces. */
export const P2P_MAP_TYPE_NAMES: readonly string[] = ['NOT_SUPPORTED', 'BUS_ADDR', 'THRU_HOST_BRIDGE'];

/**
 * What a host bridge allows (the kernel's allow-list entries): nothing, peer traffic between devices
 * below this bridge only (`same_host_bridge` entries), or also to devices below other allowed bridges.
 */
export type HostBridgeP2p = 'none' | 'same-bridge' | 'any';

/** A node of the topology. */
export interface PciNode {
  readonly id: number;
  readonly name: string;
  readonly kind: 'host-bridge' | 'switch' | 'endpoint';
  /** Upstream node; null for a host bridge. */
  readonly parent: PciNode | null;
}

/** A root complex. */
export interface PciHostBridge extends PciNode {
  readonly kind: 'host-bridge';
  /** Allow-list entry (configurable: {@link PciTopology.setHostBridgeP2p}). */
  p2p: HostBridgeP2p;
}

/** A PCIe switch (or root port). */
export interface PciSwitch extends PciNode {
  readonly kind: 'switch';
  /** ACS redirect: peer traffic through this switch is forced up to the root complex. */
  acsRedirect: boolean;
}

/** A device. */
export interface PciEndpoint extends PciNode {
  readonly kind: 'endpoint';
  /** Link bandwidth in GB/s of the device's slot (default: PCIe 4.0 x16 from the cost model). */
  readonly linkGBs: number;
}

/** The result of a distance query. */
export interface P2pDistance {
  readonly type: P2pMapTypeId;
  /** Links between the two (0 for the same device); -1 when NOT_SUPPORTED. */
  readonly distance: number;
  /** True if the path crosses from one host bridge to another. */
  readonly crossRoot: boolean;
}

/** A PCI hierarchy. */
export class PciTopology {
  private readonly nodes: PciNode[] = [];

  constructor(private readonly cost: CostModel) {}

  private add<T extends PciNode>(n: Omit<T, 'id'>): T {
    const node = { ...n, id: this.nodes.length } as T;
    this.nodes.push(node);
    return node;
  }

  private checkParent(parent: PciNode, what: string): void {
    if (this.nodes[parent.id] !== parent)
      throw new HmmError('EINVAL', `${what}: the parent is not part of this topology`);
    if (parent.kind === 'endpoint')
      throw new HmmError('EINVAL', `${what}: an endpoint cannot have devices below it`);
  }

  /** Adds a root complex. */
  addHostBridge(name: string, p2p: HostBridgeP2p = 'none'): PciHostBridge {
    return this.add<PciHostBridge>({ name, kind: 'host-bridge', parent: null, p2p });
  }

  /** Adds a switch (or root port) below `parent`. */
  addSwitch(name: string, parent: PciHostBridge | PciSwitch, acsRedirect = false): PciSwitch {
    this.checkParent(parent, `addSwitch(${name})`);
    return this.add<PciSwitch>({ name, kind: 'switch', parent, acsRedirect });
  }

  /** Adds a device below `parent`, on a link of `linkGBs` (default `cost.link.pcie4PeakGBs`). */
  addEndpoint(name: string, parent: PciHostBridge | PciSwitch, linkGBs?: number): PciEndpoint {
    this.checkParent(parent, `addEndpoint(${name})`);
    const gbs = linkGBs ?? this.cost.link.pcie4PeakGBs;
    if (!(Number.isFinite(gbs) && gbs > 0)) {
      throw new HmmError(
        'EINVAL',
        `addEndpoint(${name}): link bandwidth ${String(linkGBs)} GB/s must be > 0`,
      );
    }
    return this.add<PciEndpoint>({ name, kind: 'endpoint', parent, linkGBs: gbs });
  }

  /** Changes a host bridge's allow-list entry. */
  setHostBridgeP2p(bridge: PciHostBridge, p2p: HostBridgeP2p): void {
    if (this.nodes[bridge.id] !== bridge)
      throw new HmmError('EINVAL', 'setHostBridgeP2p: not a bridge of this topology');
    bridge.p2p = p2p;
  }

  /** The host bridge above `n`. */
  hostBridgeOf(n: PciNode): PciHostBridge {
    let x: PciNode = n;
    while (x.parent !== null) x = x.parent;
    return x as PciHostBridge;
  }

  private chain(n: PciNode): PciNode[] {
    const out: PciNode[] = [];
    for (let x: PciNode | null = n; x !== null; x = x.parent) out.push(x);
    return out;
  }

  /**
   * How `client` reaches `provider`'s memory (`calc_map_type_and_dist`). Same device: BUS_ADDR at
   * distance 0.
   */
  distance(provider: PciEndpoint, client: PciEndpoint): P2pDistance {
    if (provider === client) return { type: P2pMapType.BUS_ADDR, distance: 0, crossRoot: false };
    const a = this.chain(provider);
    const b = this.chain(client);
    const common = a.find((n) => b.includes(n));
    if (common !== undefined) {
      const dist = a.indexOf(common) + b.indexOf(common);
      // Below a common switch, with no ACS redirect on the way up to it: bus addresses.
      const redirect = [...a.slice(1, a.indexOf(common) + 1), ...b.slice(1, b.indexOf(common) + 1)].some(
        (n) => n.kind === 'switch' && (n as PciSwitch).acsRedirect,
      );
      if (common.kind === 'switch' && !redirect)
        return { type: P2pMapType.BUS_ADDR, distance: dist, crossRoot: false };
      const hb = this.hostBridgeOf(provider);
      if (hb.p2p !== 'none') return { type: P2pMapType.THRU_HOST_BRIDGE, distance: dist, crossRoot: false };
      return { type: P2pMapType.NOT_SUPPORTED, distance: -1, crossRoot: false };
    }
    const ha = this.hostBridgeOf(provider);
    const hb = this.hostBridgeOf(client);
    if (ha.p2p === 'any' && hb.p2p === 'any') {
      // Up to each root, plus the link between the roots.
      return { type: P2pMapType.THRU_HOST_BRIDGE, distance: a.length + b.length - 1, crossRoot: true };
    }
    return { type: P2pMapType.NOT_SUPPORTED, distance: -1, crossRoot: true };
  }

  /**
   * Total distance from `provider` to all `clients`, or -1 if any cannot reach it
   * (`pci_p2pdma_distance_many`). EINVAL for no clients.
   */
  distanceMany(provider: PciEndpoint, clients: readonly PciEndpoint[]): number {
    if (clients.length === 0) throw new HmmError('EINVAL', 'p2pdma distance: no clients');
    let total = 0;
    for (const c of clients) {
      const d = this.distance(provider, c);
      if (d.type === P2pMapType.NOT_SUPPORTED) return -1;
      total += d.distance;
    }
    return total;
  }

  /**
   * Sustained bandwidth in GB/s of `client` reading `provider`'s memory: the slower link times the
   * PCIe efficiency (`link.pcieEfficiency`), halved again (`link.p2pCrossRootPenalty`) across host
   * bridges. 0 when NOT_SUPPORTED.
   */
  pathGBs(provider: PciEndpoint, client: PciEndpoint): number {
    const d = this.distance(provider, client);
    if (d.type === P2pMapType.NOT_SUPPORTED) return 0;
    const link = Math.min(provider.linkGBs, client.linkGBs) * this.cost.link.pcieEfficiency;
    return d.crossRoot ? link * this.cost.link.p2pCrossRootPenalty : link;
  }

  /** GB/s of `client` reading system memory over its own link (the fallback path). */
  systemGBs(client: PciEndpoint): number {
    return client.linkGBs * this.cost.link.pcieEfficiency;
  }
}
