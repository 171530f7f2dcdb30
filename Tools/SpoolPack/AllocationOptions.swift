import ArgumentParser
import Foundation
import SpoolFormat
import SpoolIO
import SpoolKernels
import SpoolQuant

/// `--max-size`: per-matrix widths chosen by measured sensitivity to fit a file size.
struct AllocationOptions: ParsableArguments {
    @Option(name: .customLong("max-size"), help: "Largest .spool file (e.g. 66MiB): each layer matrix gets the width from --alloc-choices that the measured sensitivity favours, within this size. The embedding/LM head keeps its --bits/--keep width.")
    var maxSize: String?

    @Option(name: .customLong("alloc-choices"), help: "Widths the allocator may give a layer matrix, BITS/GROUP items.")
    var choices = "2/64,3/128,3/64,3/32,4/128,4/64,4/32"

    @Option(name: .customLong("save-sensitivity"), help: "Write the measured sensitivity table (JSON) here.")
    var saveSensitivity: String?

    @Option(name: .customLong("load-sensitivity"), help: "Use this sensitivity table instead of measuring (same model and method).")
    var loadSensitivity: String?

    @Option(name: .customLong("gain-sequences"), help: "Calibration sequences the block runs of the sensitivity measurement use.")
    var gainSequences = 2

    @Flag(name: .customLong("plan-only"), help: "Print the allocation and its file size, write no .spool.")
    var planOnly = false

    func validate() throws {
        if let maxSize { do { _ = try ByteSize.parse(maxSize) } catch { throw ValidationError(error.description) } }
        _ = try parsedChoices()
        if gainSequences < 1 { throw ValidationError("--gain-sequences must be at least 1") }
        if maxSize == nil, planOnly || loadSensitivity != nil || saveSensitivity != nil {
            throw ValidationError("--plan-only, --load-sensitivity and --save-sensitivity go with --max-size")
        }
    }

    func parsedChoices() throws -> [QuantChoice] {
        do {
            let list = try choices.split(separator: ",").map { s throws(QuantError) in try QuantChoice(parsing: s) }
            guard !list.isEmpty else { throw ValidationError("--alloc-choices is empty") }
            return Array(Set(list)).sorted()
        } catch let e as QuantError { throw ValidationError("--alloc-choices: \(e.description)") }
    }

    /// Measures or loads the sensitivity table, allocates, prints the allocation. Returns the
    /// widths, or nil when only the plan was asked for.
    func run(packer: Packer, options: PackOptions, calibration: [[Int32]], header: SpoolHeader, pool: ThreadPool) throws -> [String: QuantChoice]? {
        let budget = try ByteSize.parse(maxSize ?? "0")
        let choices = try parsedChoices()
        let table: SensitivityTable
        if let loadSensitivity {
            guard let data = FileManager.default.contents(atPath: loadSensitivity) else { throw ValidationError("cannot read \(loadSensitivity)") }
            table = try SensitivityTable.decode(data)
            stderrLine("sensitivity: \(table.entries.count) matrices from \(loadSensitivity) (\(table.method), \(table.calibrationTokens) calibration tokens)")
        } else {
            guard !calibration.isEmpty else { throw ValidationError("--max-size measures sensitivity on calibration text; none was read") }
            let t0 = Date()
            let bar = ProgressBar(start: t0)
            table = try packer.measureSensitivity(calibration: calibration, choices: choices, gainSequences: gainSequences) { done, total, what in
                bar.draw(done, total, what)
            }
            stderrLine(String(format: "sensitivity measured in %.1f s", Date().timeIntervalSince(t0)))
            if let saveSensitivity {
                try table.encoded().write(to: URL(fileURLWithPath: saveSensitivity))
                stderrLine("sensitivity table written to \(saveSensitivity)")
            }
        }
        let a = try packer.allocate(table, choices: choices, maxSize: budget, header: header)
        for line in Packer.describe(a.perTensor, layers: header.hyperparameters.layers) { print(line) }
        print(String(format: "allocation: %.2f MiB file (budget %.2f MiB), summed relative error %.4e", Double(a.fileSize) / 1048576,
                     Double(budget) / 1048576, a.error))
        return planOnly ? nil : a.perTensor
    }
}
