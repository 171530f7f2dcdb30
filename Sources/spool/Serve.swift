import ArgumentParser
import Foundation
import Hummingbird
import SpoolRuntime
import SpoolServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the OpenAI API (chat/completions, completions, models, health) over HTTP.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: "Address to bind (loopback by default; 0.0.0.0 exposes the server to the network).")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port (0 picks a free one).")
    var port = 8080

    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on /v1 requests.")
    var apiKey: String?

    @Option(name: .long, help: "Generations that run together, each with its own KV cache.")
    var slots = 2

    @Option(name: .long, help: "Requests that may wait for a slot; more get 503.")
    var queue = 8

    @Option(name: .customLong("max-body"), help: "Largest request body in bytes; larger gets 413.")
    var maxBody = 1 << 20

    func validate() throws {
        if slots < 1 { throw ValidationError("--slots must be at least 1") }
        if queue < 0 { throw ValidationError("--queue must be >= 0") }
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
        if maxBody < 1024 { throw ValidationError("--max-body must be at least 1024") }
    }

    func run() async throws {
        let scheduler = try await GenerationScheduler.start(
            modelPath: modelOptions.model, options: EngineOptions(threads: modelOptions.threads),
            contextLength: modelOptions.contextSize, limits: SchedulerLimits(slots: slots, queue: queue))
        if let w = scheduler.info.templateWarning { printErr("warning: \(w)") }
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.apiKey = apiKey
        config.maxBodyBytes = maxBody
        let info = scheduler.info
        let shown = config
        let app = OpenAIServer(scheduler: scheduler, configuration: config).application { bound in
            printErr("spool serve: \(info.id) on http://\(shown.host):\(bound) (context \(info.contextLength), template \(info.template.family.rawValue), \(slots) slots, queue \(queue))")
        }
        try await app.runService()
    }
}
