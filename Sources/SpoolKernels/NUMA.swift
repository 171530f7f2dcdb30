#if os(Linux)
import CNuma
#endif

/// The machine's NUMA nodes and the CPUs of each (only CPUs this process may run on), from libnuma.
/// Where libnuma reports no NUMA support (or off Linux) it is one node holding every allowed CPU,
/// and everything built on it degrades to the plain behaviour: no pinning, ordinary allocation.
public struct NUMATopology: Sendable, Equatable, CustomStringConvertible {
    /// CPUs of each node, ascending; nodes without allowed CPUs are left out.
    public var nodes: [[Int]]

    public init(nodes: [[Int]]) { self.nodes = nodes.filter { !$0.isEmpty } }

    public var nodeCount: Int { nodes.count }
    public var isMultiNode: Bool { nodes.count > 1 }

    public var description: String {
        nodes.enumerated().map { "node \($0.offset): cpus \($0.element.map(String.init).joined(separator: ","))" }
            .joined(separator: "; ")
    }

    /// The topology of this machine.
    public static func detect() -> NUMATopology {
        let allowed = Affinity.allowedCPUs()
        #if os(Linux)
        if numa_available() >= 0, !allowed.isEmpty {
            let maxNode = Int(numa_max_node())
            var nodes = [[Int]](repeating: [], count: maxNode + 1)
            for cpu in allowed {
                let node = Int(numa_node_of_cpu(Int32(cpu)))
                if node >= 0 && node <= maxNode { nodes[node].append(cpu) } else { nodes[0].append(cpu) }
            }
            return NUMATopology(nodes: nodes)
        }
        #endif
        return NUMATopology(nodes: [allowed])
    }

    /// Where each of `threads` pool threads runs: threads are split over the nodes in proportion
    /// (thread i on node i * nodeCount / threads, so a node's threads are consecutive and share its
    /// memory), and take the node's CPUs in order (wrapping when a node has fewer CPUs than
    /// threads). Empty for a single node: nothing to pin.
    public func placement(threads: Int) -> [(node: Int, cpu: Int)] {
        guard isMultiNode, threads > 0 else { return [] }
        var next = [Int](repeating: 0, count: nodeCount)
        return (0..<threads).map { i in
            let node = i * nodeCount / threads
            let cpus = nodes[node]
            defer { next[node] += 1 }
            return (node, cpus[next[node] % cpus.count])
        }
    }
}

/// Memory placed on one NUMA node (libnuma's numa_alloc_onnode) when the machine has that node,
/// otherwise ordinary 64-byte aligned memory: on a one-node machine this is a plain allocation.
public final class NodeBuffer {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int
    /// The node the memory is bound to, or nil when it is an ordinary allocation.
    public let boundNode: Int?

    /// `bytes` (at least 1) for `node`; `bind` false forces an ordinary allocation.
    public init(bytes: Int, node: Int, bind: Bool = true) {
        byteCount = max(1, bytes)
        #if os(Linux)
        if bind, node >= 0, numa_available() >= 0, node <= Int(numa_max_node()), numa_max_node() > 0,
           let p = numa_alloc_onnode(byteCount, Int32(node)) {
            pointer = p
            boundNode = node
            return
        }
        #endif
        pointer = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        boundNode = nil
    }

    deinit {
        #if os(Linux)
        if boundNode != nil {
            numa_free(pointer, byteCount)
            return
        }
        #endif
        pointer.deallocate()
    }
}
