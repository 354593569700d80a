fn main() {
    print!("{}", oidc_refresh_operator::crd::crd_yaml());
}
