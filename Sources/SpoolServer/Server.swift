import Foundation
import Hummingbird
import NIOCore
import SpoolRuntime
import SpoolTokenizer

public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (tests); `onListening` reports which.
    public var port = 8080
    /// When set, /v1 requests must carry `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// Larger request bodies get 413.
    public var maxBodyBytes = 1 << 20

    public init() {}
}

/// The OpenAI-compatible HTTP front: `POST /v1/chat/completions`, `POST /v1/completions`,
/// `GET /v1/models`, `GET /health`. Handlers only parse, validate and format; generation happens on
/// the scheduler's compute thread.
public struct OpenAIServer: Sendable {
    public let scheduler: GenerationScheduler
    public let configuration: ServerConfiguration

    public init(scheduler: GenerationScheduler, configuration: ServerConfiguration) {
        self.scheduler = scheduler
        self.configuration = configuration
    }

    /// The Hummingbird application; `onListening` receives the bound port.
    public func application(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: AuthMiddleware(apiKey: configuration.apiKey))
        router.get("/health") { _, _ in self.health() }
        router.get("/v1/models") { _, _ in self.models() }
        router.post("/v1/chat/completions") { request, _ in try await self.complete(request, chat: true) }
        router.post("/v1/completions") { request, _ in try await self.complete(request, chat: false) }
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "spool"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) }
        )
    }

    func health() -> Response {
        let c = scheduler.counts
        return jsonResponse(["status": "ok", "slots": .int(c.slots), "slots_idle": .int(c.slots - c.busy),
                             "slots_processing": .int(c.busy), "queued": .int(c.queued)])
    }

    func models() -> Response {
        jsonResponse(["object": "list", "data": [["id": .string(scheduler.info.id), "object": "model", "created": 0, "owned_by": "spool",
                                                  "context_length": .int(scheduler.info.contextLength)]]])
    }

    /// The completion endpoints. Their responses close the connection: watching the connection for a
    /// hang-up (to cancel the generation) consumes the request stream, so Hummingbird closes it after
    /// the response, and saying so keeps clients from reusing a connection that is about to go.
    func complete(_ request: Request, chat: Bool) async throws -> Response {
        var response: Response
        do {
            response = try await generate(request, chat: chat)
        } catch let e as APIError {
            response = jsonResponse(e.json, status: HTTPResponse.Status(code: e.status))
        }
        response.headers[.connection] = "close"
        return response
    }

    func generate(_ request: Request, chat: Bool) async throws -> Response {
        let limit = configuration.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw bodyTooLarge(limit)
        }
        // Cancel the work if the client closes the connection while we compute a non-streaming reply.
        return try await request.body.consumeWithCancellationOnInboundClose { body in
            let buffer: ByteBuffer
            do {
                buffer = try await body.collect(upTo: limit)
            } catch let e as HTTPError where e.status == .contentTooLarge {
                throw bodyTooLarge(limit)
            }
            let parsed = try CompletionRequest(json: Data(buffer.readableBytesView), chat: chat)
            let job = try self.job(for: parsed)
            let (id, events) = try self.submit(job)
            let reply = Reply(chat: chat, model: scheduler.info.id, includeUsage: parsed.includeUsage)
            return try await withTaskCancellationHandler {
                // Wait for the prompt to be in a slot: a failure there is still an error status.
                var iterator = events.makeAsyncIterator()
                var promptTokens = job.prompt.count
                switch await iterator.next() {
                case let .started(p, _)?: promptTokens = p
                case let .failed(message)?: throw APIError(status: 500, message: message, type: "server_error")
                case let .finished(reason, _)? where reason == .cancelled: throw CancellationError()
                default: break
                }
                if parsed.stream {
                    // The writer iterates the same stream on from here (the handler no longer does).
                    return self.streamingResponse(reply: reply, promptTokens: promptTokens, id: id, events: events)
                }
                var text = ""
                while let e = await iterator.next() {
                    switch e {
                    case let .text(t): text += t
                    case let .finished(reason, n): return jsonResponse(reply.complete(text: text, finish: reason, promptTokens: promptTokens, completionTokens: n))
                    case let .failed(message): throw APIError(status: 500, message: message, type: "server_error")
                    case .started: break
                    }
                }
                throw CancellationError()
            } onCancel: {
                scheduler.cancel(id)
            }
        }
    }

    func submit(_ job: GenerationJob) throws(APIError) -> (Int, AsyncStream<GenerationEvent>) {
        do {
            return try scheduler.submit(job)
        } catch {
            throw APIError(status: 503, message: error.description, type: "server_error", code: "server_busy")
        }
    }

    /// Renders and tokenizes the prompt and checks it against the context, so that a prompt that can
    /// never fit is refused before it waits for a slot.
    func job(for r: CompletionRequest) throws(APIError) -> GenerationJob {
        let info = scheduler.info
        let text: String
        var stop = r.stop
        switch r.input {
        case let .chat(messages):
            do {
                text = try info.template.render(messages, addGenerationPrompt: true)
            } catch {
                throw .invalid("messages", error.description)
            }
            stop += info.template.stopStrings
        case let .text(t): text = t
        }
        let prompt = info.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        let context = info.contextLength
        guard !prompt.isEmpty else { throw .invalid(r.input.isChat ? "messages" : "prompt", "the prompt is empty") }
        guard prompt.count < context else {
            throw .invalid(r.input.isChat ? "messages" : "prompt",
                           "this model's context is \(context) tokens, but the prompt has \(prompt.count) tokens (at least one more is needed for the reply); shorten the prompt",
                           code: "context_length_exceeded")
        }
        if let max = r.maxTokens, max > context - prompt.count {
            throw .invalid("max_tokens",
                           "this model's context is \(context) tokens; the prompt has \(prompt.count), so 'max_tokens' can be at most \(context - prompt.count), not \(max)",
                           code: "context_length_exceeded")
        }
        return GenerationJob(prompt: prompt, maxTokens: r.maxTokens ?? (context - prompt.count), sampling: r.sampling, stop: stop)
    }

    func streamingResponse(reply: Reply, promptTokens: Int, id: Int, events: AsyncStream<GenerationEvent>) -> Response {
        let scheduler = self.scheduler
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            // A failed write means the client has gone: stop its generation and free the slot.
            do {
                var iterator = events.makeAsyncIterator()
                try await writer.write(sse(reply.chunk(text: nil, finish: nil)))
                loop: while let e = await iterator.next() {
                    switch e {
                    case let .text(t): try await writer.write(sse(reply.chunk(text: t, finish: nil)))
                    case let .finished(reason, n):
                        try await writer.write(sse(reply.chunk(text: nil, finish: reason)))
                        if reply.includeUsage { try await writer.write(sse(reply.usageChunk(promptTokens: promptTokens, completionTokens: n))) }
                        break loop
                    case let .failed(message):
                        try await writer.write(sse(APIError(status: 500, message: message, type: "server_error").json))
                        break loop
                    case .started: break
                    }
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            } catch {
                scheduler.cancel(id)
                throw error
            }
        })
    }
}

extension CompletionRequest.Input {
    var isChat: Bool { if case .chat = self { return true } else { return false } }
}

func bodyTooLarge(_ limit: Int) -> APIError {
    APIError(status: 413, message: "the request body is larger than the limit of \(limit) bytes", code: "body_too_large")
}

func sse(_ value: JSONValue) -> ByteBuffer {
    var b = ByteBuffer(string: "data: ")
    b.writeBytes(value.encoded())
    b.writeString("\n\n")
    return b
}

func jsonResponse(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: value.encoded())))
}

/// Turns every error into an OpenAI-style JSON error with a fitting status.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return jsonResponse(e.json, status: HTTPResponse.Status(code: e.status))
        } catch let e as HTTPError {
            let type = e.status.code >= 500 ? "server_error" : "invalid_request_error"
            let message = e.status == .notFound ? "no route for \(request.method) \(request.uri.path)" : (e.body ?? e.status.reasonPhrase)
            return jsonResponse(APIError(status: e.status.code, message: message, type: type).json, status: e.status)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            return jsonResponse(APIError(status: 500, message: "\(error)", type: "server_error").json, status: .internalServerError)
        }
    }
}

/// The bearer-token check for /v1 routes when the server has an API key.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let apiKey: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let apiKey, request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        guard request.headers[.authorization] == "Bearer \(apiKey)" else {
            throw APIError(status: 401, message: "missing or wrong API key; send 'Authorization: Bearer <key>'", code: "invalid_api_key")
        }
        return try await next(request, context)
    }
}
