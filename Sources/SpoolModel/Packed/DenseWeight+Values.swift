extension DenseWeight {
    /// Float weights from an array (rows, cols), e.g. the packer's dequantized matrices.
    public convenience init(rows: Int, cols: Int, copying values: [Float]) {
        self.init(rows: rows, cols: cols)
        self.values.update(from: values, count: min(values.count, rows * cols))
    }
}
