fn main() {
    print!("{}", okms_operator::crd::crds_yaml());
}
