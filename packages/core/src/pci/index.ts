/**
 * The PCI layer: topology and peer-to-peer DMA (drivers/pci/p2pdma.c), and the importer side of the
 * p2p_map / p2p_unmap contract.
 *
 * @module
 */
export { PciTopology, P2pMapType, P2P_MAP_TYPE_NAMES } from './topology.js';
export type {
  P2pMapTypeId,
  HostBridgeP2p,
  PciNode,
  PciHostBridge,
  PciSwitch,
  PciEndpoint,
  P2pDistance,
} from './topology.js';
export {
  P2pdmaResource,
  p2pdmaAddResource,
  p2pdmaResourceOf,
  hasP2pmem,
  findP2pmem,
  p2pTransferNs,
} from './p2pdma.js';
export type { P2pdmaResourceDesc } from './p2pdma.js';
export { p2pMap, p2pUnmap, p2pMappingLive } from './p2p-map.js';
export { p2pMapLoop } from './p2p-map-loop.js';
export type { P2pMapLoopArgs } from './p2p-map-loop.js';
export type { P2pExporterOps, P2pImporter } from './p2p-map.js';
